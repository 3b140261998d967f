"""The API key table: what budapp writes under ``api_key:{hash}`` and ``published_model_info``, in memory.

A client's key ``K`` is looked up as ``sha256_hex("bud-" + K)``; the entry maps each model name the
key may use to the endpoint that serves it, plus ``__metadata__`` about the key. Lookups never touch
Redis: the sync keeps this table current.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import ujson

__all__ = ["ApiKey", "KeyTable", "ModelGrant", "hash_key", "parse_grants"]

log = logging.getLogger(__name__)

#: Keys whose raw value starts with this may also use the published models.
CLIENT_KEY_PREFIX = "bud_client"
_METADATA = "__metadata__"
_GRANT_FIELDS = ("endpoint_id", "model_id", "project_id")
_OPTIONAL_FIELDS = ("prompt_id", "prompt_version_id", "version")


def hash_key(key: str) -> str:
    """The table's lookup key for a client's raw API key (what budapp stores)."""
    return hashlib.sha256(("bud-" + key).encode()).hexdigest()


class ModelGrant:
    """One model a key may use, and the endpoint (model table entry) that serves it."""

    __slots__ = ("endpoint_id", "model_id", "project_id", "prompt_id", "prompt_version_id", "version")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.endpoint_id = str(fields["endpoint_id"])
        self.model_id = str(fields["model_id"])
        self.project_id = str(fields["project_id"])
        self.prompt_id = fields.get("prompt_id")
        self.prompt_version_id = fields.get("prompt_version_id")
        self.version = fields.get("version")


class ApiKey:
    """A known key: its models and who it belongs to."""

    __slots__ = ("models", "api_key_id", "user_id", "project_id", "expires_at")

    def __init__(self, models: Mapping[str, ModelGrant], metadata: Mapping[str, Any], expires_at: float | None) -> None:
        self.models = models
        self.api_key_id = metadata.get("api_key_id")
        self.user_id = metadata.get("user_id")
        self.project_id = metadata.get("api_key_project_id")
        #: ``time.monotonic()`` after which the key is dead, from its Redis TTL (None: no expiry).
        self.expires_at = expires_at


def parse_grants(raw: bytes | str, where: str) -> tuple[dict[str, ModelGrant], dict[str, Any]] | None:
    """The model grants and ``__metadata__`` of one entry, None when it is not a JSON object at all;
    grants that do not parse are skipped, each with a warning."""
    try:
        data = ujson.loads(raw)
    except ValueError:
        log.warning("%s: not JSON; skipped", where)
        return None
    if not isinstance(data, dict):
        log.warning("%s: not a JSON object; skipped", where)
        return None
    metadata = data.get(_METADATA)
    grants = {}
    for name, fields in data.items():
        if name == _METADATA:
            continue
        if not isinstance(fields, dict) or not all(fields.get(f) for f in _GRANT_FIELDS):
            log.warning("%s: model %r lacks %s; skipped", where, name, "/".join(_GRANT_FIELDS))
            continue
        grants[name] = ModelGrant(fields)
    return grants, metadata if isinstance(metadata, dict) else {}


class KeyTable:
    """Known keys by hash, plus the published models; written by the sync (or the TOML ``[api_keys]``)."""

    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._published: Mapping[str, ModelGrant] = MappingProxyType({})
        #: Set once a full load has succeeded: before that, auth cannot tell a key from a stranger.
        self.loaded = False

    def __len__(self) -> int:
        return len(self._keys)

    @staticmethod
    def entry(key_hash: str, raw: bytes | str, ttl_s: float | None = None) -> ApiKey | None:
        """An ``ApiKey`` from what budapp wrote (None when it does not parse); ``ttl_s`` is the Redis
        TTL (None or negative: no expiry)."""
        parsed = parse_grants(raw, f"api_key:{key_hash[:8]}…")
        if parsed is None:
            return None
        expires = None if ttl_s is None or ttl_s < 0 else time.monotonic() + ttl_s
        return ApiKey(MappingProxyType(parsed[0]), parsed[1], expires)

    def put(self, key_hash: str, raw: bytes | str, ttl_s: float | None = None) -> None:
        """Add or replace a key; one whose value does not parse is dropped (refused, not kept stale)."""
        entry = self.entry(key_hash, raw, ttl_s)
        if entry is None:
            self._keys.pop(key_hash, None)
        else:
            self._keys[key_hash] = entry

    def remove(self, key_hash: str) -> None:
        self._keys.pop(key_hash, None)

    def replace_all(self, keys: dict[str, ApiKey]) -> None:
        self._keys = keys

    def set_published(self, raw: bytes | str | None) -> None:
        parsed = parse_grants(raw, "published_model_info") if raw else None
        self._published = MappingProxyType(parsed[0] if parsed else {})

    def lookup(self, key: str) -> tuple[ApiKey, Mapping[str, ModelGrant]] | None:
        """The key and every model it may use, or None for an unknown or expired key."""
        entry = self._keys.get(hash_key(key))
        if entry is None:
            return None
        if entry.expires_at is not None and time.monotonic() >= entry.expires_at:
            return None
        if key.startswith(CLIENT_KEY_PREFIX) and self._published:
            return entry, {**self._published, **entry.models}
        return entry, entry.models
