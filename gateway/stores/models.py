"""Model table entries as budapp writes them under ``model_table:{endpoint_id}``, made into models.

An entry is ``{"<endpoint_id>": {routing, providers, endpoints, ...}}`` in the TOML model schema,
plus ``api_key``: the provider credential, RSA-encrypted. It is decrypted here, once, into the
credential store as ``store_{endpoint_id}``, which the entry's providers name as
``api_key_location = "dynamic::store_{endpoint_id}"``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ujson

from gateway.config.loader import ConfigError, model_from_dict
from gateway.config.schema import ModelConfig
from gateway.stores.crypto import CredentialDecryptor, DecryptionError
from providers.base import Provider
from providers.credentials import Secret

__all__ = ["ModelEntry", "parse_model_entry", "store_name"]

log = logging.getLogger(__name__)


def store_name(endpoint_id: str) -> str:
    return f"store_{endpoint_id}"


class ModelEntry:
    """What one model table entry yields: a model, or the reason it cannot serve; and its credential."""

    __slots__ = ("endpoint_id", "model", "unavailable", "secret", "ciphertext")

    def __init__(self, endpoint_id: str, model: ModelConfig | None, unavailable: str | None,
                 secret: Secret | None, ciphertext: str | None = None) -> None:
        self.endpoint_id = endpoint_id
        self.model = model
        self.unavailable = unavailable
        self.secret = secret
        #: The encrypted credential as written (the decryptor caches its plaintext by it).
        self.ciphertext = ciphertext


def parse_model_entry(
    endpoint_id: str, raw: bytes | str, registry: Mapping[str, type[Provider]], decryptor: CredentialDecryptor
) -> ModelEntry | None:
    """The entry's model; None when it is not a model at all (logged). Never logs the credential."""
    where = f"model_table:{endpoint_id}"
    try:
        data = ujson.loads(raw)
    except ValueError:
        log.warning("%s: not JSON; skipped", where)
        return None
    entry: Any = data.get(endpoint_id) if isinstance(data, dict) else None
    if entry is None and isinstance(data, dict) and len(data) == 1:
        entry = next(iter(data.values()))
    if not isinstance(entry, dict):
        log.warning("%s: no model object under its endpoint id; skipped", where)
        return None
    entry = dict(entry)
    encrypted = entry.pop("api_key", None)
    secret = None
    if encrypted:
        try:
            secret = Secret(decryptor.decrypt(str(encrypted)))
        except DecryptionError as e:
            log.warning("%s: %s; the model is unavailable", where, e)
            return ModelEntry(endpoint_id, None, "its provider credential could not be decrypted", None)
    ciphertext = str(encrypted) if encrypted else None
    try:
        model = model_from_dict(endpoint_id, entry, registry, where)
    except ConfigError as e:
        log.warning("invalid model: %s", e)
        return ModelEntry(endpoint_id, None, "its configuration is invalid", None, ciphertext)
    return ModelEntry(endpoint_id, model, None, secret, ciphertext)
