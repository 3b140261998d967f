"""Guardrail profiles as budapp writes them under ``guardrail_table:{id}``: ``{"<id>": {name, providers,
severity_threshold, guard_types, execution_mode, failure_mode, api_key}}``, read like a
``[guardrails."ID"]`` table. ``api_key`` is RSA-encrypted like a model's credential and decrypted once
into the credential store as ``store_{id}``: the profile's remote providers use it unless one names an
``api_key_location`` of its own. A profile of the config keeps its id against Redis."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping

import redis
import ujson

from gateway.config.checker import Checker
from gateway.config.guard import profile
from gateway.config.schema import GuardrailProfile
from gateway.guard.guardrails import Guardrail
from gateway.stores.crypto import CredentialDecryptor, DecryptionError
from gateway.stores.models import store_name
from gateway.stores.sync import Mirror, reread, scan_values
from providers.credentials import Secret

__all__ = ["GuardrailMirror"]

log = logging.getLogger(__name__)

PREFIX = "guardrail_table:"


class GuardrailMirror(Mirror):
    """``guardrails`` is the stage's mapping of profile id to ``Guardrail``; ``build`` makes one."""

    prefixes = (PREFIX,)

    def __init__(self, guardrails: MutableMapping[str, Guardrail], build: Callable[[GuardrailProfile], Guardrail],
                 decryptor: CredentialDecryptor, store: MutableMapping[str, Secret]) -> None:
        self._guardrails = guardrails
        self._build = build
        self._decryptor = decryptor
        self._store = store
        #: The ids of the config's own profiles (never replaced from Redis).
        self._fixed = frozenset(guardrails)
        self._from_redis: set[str] = set()

    def load(self, client: redis.Redis) -> None:
        seen = set()
        for name, raw in scan_values(client, PREFIX + "*").items():
            profile_id = name[len(PREFIX):]
            seen.add(profile_id)
            self._put(profile_id, raw)
        for gone in self._from_redis - seen:
            self._drop(gone)

    def changed(self, client: redis.Redis, name: str, was_set: bool) -> None:
        profile_id = name[len(PREFIX):]
        raw = reread(client, name) if was_set else None
        if raw is None:
            self._drop(profile_id)
        else:
            self._put(profile_id, raw)

    def _put(self, profile_id: str, raw: bytes) -> None:
        if profile_id in self._fixed:
            return
        where = f"{PREFIX}{profile_id}"
        try:
            data = ujson.loads(raw)
        except ValueError:
            log.warning("%s: not JSON; the profile is not loaded", where)
            self._drop(profile_id)
            return
        entry = data.get(profile_id) if isinstance(data, dict) else None
        if entry is None and isinstance(data, dict) and len(data) == 1:
            entry = next(iter(data.values()))
        if not isinstance(entry, dict):
            log.warning("%s: no profile object under its id; the profile is not loaded", where)
            self._drop(profile_id)
            return
        entry = dict(entry)
        encrypted = entry.pop("api_key", None)
        if encrypted and isinstance(entry.get("providers"), dict):
            # The profile's key is its remote providers' unless one names its own.
            entry["providers"] = {
                name: {"api_key_location": f"dynamic::{store_name(profile_id)}", **p}
                if isinstance(p, dict) and p.get("type") in ("openai", "azure_content_safety") else p
                for name, p in entry["providers"].items()}
        c = Checker()
        found = profile(c, profile_id, entry, where)
        if c.errors:
            log.warning("invalid guardrail profile %s: %s; the profile is not loaded", profile_id, "; ".join(c.errors))
            self._drop(profile_id)
            return
        if encrypted:
            try:
                self._store[store_name(profile_id)] = Secret(self._decryptor.decrypt(str(encrypted)))
            except DecryptionError as e:
                log.warning("%s: %s; the profile is not loaded", where, e)
                self._drop(profile_id)
                return
        self._guardrails[profile_id] = self._build(found)
        self._from_redis.add(profile_id)

    def _drop(self, profile_id: str) -> None:
        if profile_id in self._fixed:
            return
        self._guardrails.pop(profile_id, None)
        self._store.pop(store_name(profile_id), None)
        self._from_redis.discard(profile_id)
