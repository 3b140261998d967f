"""What budapp (the control plane) writes to Redis for the gateway, written the way budapp writes it.

``api_key:{sha256_hex("bud-" + raw key)}``
    JSON: each user-facing model name -> a grant ``{"endpoint_id", "model_id", "project_id"}`` (optionally
    ``prompt_id``, ``prompt_version_id``, ``version``), plus ``"__metadata__": {"api_key_id", "user_id",
    "api_key_project_id"}``. The Redis TTL of the key is the API key's expiry.
``model_table:{endpoint_id}``
    JSON: ``{"<endpoint_id>": {routing, providers, endpoints, fallback_models, retry_config, pricing,
    rate_limits, guardrail_profile, api_key}}``; ``api_key`` is the provider credential encrypted with the
    gateway's RSA public key, and every provider section that uses it names it as
    ``api_key_location = "dynamic::store_{endpoint_id}"``.
``published_model_info``
    JSON like an ``api_key`` value: models every ``bud_client...`` key may use besides its own.

The RSA key pairs here are made with pycryptodome, the private half exported as the gateway reads it
(PKCS#1, PKCS#8, encrypted PKCS#8 PEM), the public half encrypting as budapp does (OAEP-SHA256 or
PKCS#1 v1.5; hex or base64). The pure builders (``key_entry``, ``model_entry``, ...) serve unit tests;
``BudApp`` writes them to a real Redis.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from Crypto.Cipher import PKCS1_OAEP, PKCS1_v1_5
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA

__all__ = [
    "BASE64",
    "HEX",
    "OAEP",
    "PKCS1V15",
    "BudApp",
    "KeyPair",
    "grant",
    "hash_key",
    "key_entry",
    "model_entry",
    "new_raw_key",
    "openai_section",
    "out_of_range_ciphertext",
    "session_key_pair",
    "store_location",
    "wrong_key_ciphertext",
]

KEY_PREFIX = "api_key:"
MODEL_PREFIX = "model_table:"
PUBLISHED = "published_model_info"
METADATA = "__metadata__"
#: Keys whose raw value starts with this may also use the published models.
CLIENT_KEY_PREFIX = "bud_client"
#: RSA size for tests: production uses 4096, which takes seconds to generate and ~10 ms per decryption.
TEST_RSA_BITS = 2048
#: Padding schemes budapp has used, newest first.
OAEP, PKCS1V15 = "oaep", "pkcs1v15"
#: How a ciphertext is written as text.
HEX, BASE64 = "hex", "base64"
#: How an encrypted PKCS#8 PEM protects the key (PBES2, as ``openssl pkcs8 -topk8 -v2 aes-256-cbc`` does).
PKCS8_PROTECTION = "PBKDF2WithHMAC-SHA256AndAES256-CBC"
#: What budapp writes beside the model settings.
PRICING = {"input_cost": 0.5, "output_cost": 1.5, "currency": "USD", "per_tokens": 1_000_000}
RATE_LIMITS = {"algorithm": "token_bucket", "requests_per_minute": 600, "tokens_per_minute": 100_000}


def hash_key(raw_key: str) -> str:
    """The Redis name part budapp stores a client key under: ``sha256_hex("bud-" + key)``."""
    return hashlib.sha256(f"bud-{raw_key}".encode()).hexdigest()


def store_location(endpoint_id: str) -> str:
    """The ``api_key_location`` budapp writes into the provider sections that use the entry's credential."""
    return f"dynamic::store_{endpoint_id}"


def new_raw_key(prefix: str = "bud_") -> str:
    """A fresh client API key; ``prefix=CLIENT_KEY_PREFIX + "_"`` makes a client key."""
    return f"{prefix}{uuid.uuid4().hex}"


class KeyPair:
    """An RSA key pair: the private half as the gateway is given it, the public half as budapp uses it."""

    def __init__(self, key: RSA.RsaKey) -> None:
        self._key = key

    @property
    def bits(self) -> int:
        return self._key.size_in_bits()

    @property
    def modulus(self) -> int:
        return int(self._key.n)

    def pkcs1_pem(self) -> str:
        """``-----BEGIN RSA PRIVATE KEY-----``."""
        return self._key.export_key("PEM", pkcs=1).decode()

    def pkcs8_pem(self) -> str:
        """``-----BEGIN PRIVATE KEY-----``."""
        return self._key.export_key("PEM", pkcs=8).decode()

    def encrypted_pkcs8_pem(self, password: str) -> str:
        """``-----BEGIN ENCRYPTED PRIVATE KEY-----``, opened with ``password``."""
        return self._key.export_key("PEM", pkcs=8, passphrase=password, protection=PKCS8_PROTECTION).decode()

    def public_pem(self) -> str:
        return self._key.public_key().export_key("PEM").decode()

    def encrypt(self, plaintext: str, *, padding: str = OAEP, encoding: str = HEX) -> str:
        """``plaintext`` encrypted with the PUBLIC key, as budapp stores it."""
        public = self._key.public_key()
        if padding == OAEP:
            ciphertext = PKCS1_OAEP.new(public, hashAlgo=SHA256).encrypt(plaintext.encode())
        elif padding == PKCS1V15:
            ciphertext = PKCS1_v1_5.new(public).encrypt(plaintext.encode())
        else:
            raise ValueError(f"unknown padding {padding!r}")
        if encoding == HEX:
            return ciphertext.hex()
        if encoding == BASE64:
            return base64.b64encode(ciphertext).decode()
        raise ValueError(f"unknown encoding {encoding!r}")


@functools.cache
def session_key_pair(label: str = "main", bits: int = TEST_RSA_BITS) -> KeyPair:
    """A key pair per ``label`` and size, generated once per test session (generation is slow)."""
    return KeyPair(RSA.generate(bits))


#: How many encryptions ``wrong_key_ciphertext`` tries (each lands below the other modulus about half the time
#: or more, so failing all of them is as likely as 64 coin tosses landing the same way).
_WRONG_KEY_TRIES = 64


def wrong_key_ciphertext(plaintext: str, wrong: KeyPair, right: KeyPair, *, padding: str = OAEP) -> str:
    """``plaintext`` encrypted (hex) with the ``wrong`` public key, as budapp holding the wrong key would,
    picked among fresh encryptions so that as a number it is below ``right``'s modulus: a ciphertext the
    ``right`` key can try to decrypt and fails to. (About half of them are above it: out of range instead.)"""
    for _ in range(_WRONG_KEY_TRIES):
        ciphertext = wrong.encrypt(plaintext, padding=padding)
        if int(ciphertext, 16) < right.modulus:
            return ciphertext
    raise AssertionError(f"no ciphertext below the modulus in {_WRONG_KEY_TRIES} encryptions")


def out_of_range_ciphertext(right: KeyPair) -> str:
    """A ciphertext of the right length whose value is not below ``right``'s modulus (hex): what a wrong
    key of the same size makes about half the time."""
    return "ff" * (right.bits // 8)


def grant(endpoint_id: str, **optional: Any) -> dict[str, Any]:
    """One model of a key: the endpoint serving it (``optional``: prompt_id, prompt_version_id, version)."""
    return {"endpoint_id": endpoint_id, "model_id": f"model-{endpoint_id}", "project_id": "project-test",
            **optional}


def key_entry(models: Mapping[str, Mapping[str, Any]], metadata: Mapping[str, Any] | None = None) -> dict:
    """The JSON object of an ``api_key:{hash}`` (or ``published_model_info``) value."""
    meta = {"api_key_id": str(uuid.uuid4()), "user_id": "user-test", "api_key_project_id": "project-test"}
    return {**models, METADATA: dict(metadata if metadata is not None else meta)}


def openai_section(api_base: str, model_name: str, provider_type: str = "openai", **options: Any) -> dict:
    """A provider section of a model table entry, without ``api_key_location`` unless ``options`` has one."""
    return {"type": provider_type, "model_name": model_name, "api_base": api_base, **options}


def model_entry(endpoint_id: str, providers: Mapping[str, Mapping[str, Any]], *, api_key: str | None = None,
                endpoints: Iterable[str] = ("chat",), **settings: Any) -> dict:
    """The JSON object of a ``model_table:{endpoint_id}`` value.

    ``api_key`` is the (already encrypted) credential; each provider section without an
    ``api_key_location`` of its own is pointed at it, as budapp does. ``settings`` add or replace keys.
    """
    sections = {}
    for name, section in providers.items():
        section = dict(section)
        if api_key is not None:
            section.setdefault("api_key_location", store_location(endpoint_id))
        sections[name] = section
    body: dict[str, Any] = {
        "routing": list(providers),
        "endpoints": list(endpoints),
        "fallback_models": [],
        "retry_config": {"num_retries": 0, "max_delay_s": 1},
        "providers": sections,
        "pricing": PRICING,
        "rate_limits": RATE_LIMITS,
        "guardrail_profile": None,
        **settings,
    }
    if api_key is not None:
        body["api_key"] = api_key
    return {endpoint_id: body}


class BudApp:
    """Writes keys, models and credentials to one Redis database as budapp does.

    Every secret written (raw client keys, plaintext credentials and their ciphertexts) is kept in
    ``secrets``, so a test can check that none of them reached a log line, an error body or a metric.
    ``key_pair`` encrypts the credentials; None writes them as they are (a gateway without an RSA key).
    """

    def __init__(self, client: redis.Redis, key_pair: KeyPair | None) -> None:
        self.client = client
        self.key_pair = key_pair
        self.secrets: list[str] = []

    # -- keys ----------------------------------------------------------------------------------------

    def put_key(self, raw_key: str, models: Mapping[str, Mapping[str, Any]], *,
                metadata: Mapping[str, Any] | None = None, ttl_s: float | None = None) -> str:
        """Write ``api_key:{hash}``, with the expiry ``ttl_s`` (if any) in the same SET; returns the hash."""
        self.secrets.append(raw_key)
        key_hash = hash_key(raw_key)
        px = None if ttl_s is None else int(ttl_s * 1000)
        self.client.set(KEY_PREFIX + key_hash, json.dumps(key_entry(models, metadata)), px=px)
        return key_hash

    def expire_key(self, raw_key: str, ttl_s: float) -> None:
        """Give an existing key a new expiry (budapp extends a key's validity this way)."""
        self.client.pexpire(KEY_PREFIX + hash_key(raw_key), int(ttl_s * 1000))

    def delete_key(self, raw_key: str) -> None:
        self.client.delete(KEY_PREFIX + hash_key(raw_key))

    # -- models --------------------------------------------------------------------------------------

    def encrypt(self, credential: str, *, key_pair: KeyPair | None = None, padding: str = OAEP,
                encoding: str = HEX) -> str:
        """The credential as budapp stores it: encrypted with ``key_pair`` (default: the writer's)."""
        pair = key_pair or self.key_pair
        stored = credential if pair is None else pair.encrypt(credential, padding=padding, encoding=encoding)
        self.secrets += [credential, stored]
        return stored

    def put_model(self, endpoint_id: str, providers: Mapping[str, Mapping[str, Any]], *,
                  credential: str | None = None, key_pair: KeyPair | None = None, padding: str = OAEP,
                  encoding: str = HEX, api_key: str | None = None, endpoints: Iterable[str] = ("chat",),
                  **settings: Any) -> None:
        """Write ``model_table:{endpoint_id}``, its ``credential`` (plaintext here) encrypted in ``api_key``;
        or, given ``api_key``, that stored value as it is (already encrypted, or malformed)."""
        if credential is not None:
            api_key = self.encrypt(credential, key_pair=key_pair, padding=padding, encoding=encoding)
        elif api_key is not None:
            self.secrets.append(api_key)
        entry = model_entry(endpoint_id, providers, api_key=api_key, endpoints=endpoints, **settings)
        self.client.set(MODEL_PREFIX + endpoint_id, json.dumps(entry))

    def delete_model(self, endpoint_id: str) -> None:
        self.client.delete(MODEL_PREFIX + endpoint_id)

    # -- published models and raw values -------------------------------------------------------------

    def publish(self, models: Mapping[str, Mapping[str, Any]]) -> None:
        """Write ``published_model_info``: models every ``bud_client`` key may use."""
        self.client.set(PUBLISHED, json.dumps(key_entry(models, {})))

    def put_raw(self, name: str, value: str | bytes) -> None:
        """Write any value under ``name`` (a malformed entry, say)."""
        self.client.set(name, value)
