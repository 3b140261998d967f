"""RSA decryption of the provider credentials budapp writes: OAEP-SHA256 first, PKCS#1 v1.5 as fallback.

The private key comes from ``TENSORZERO_RSA_PRIVATE_KEY`` (inline PEM) or
``TENSORZERO_RSA_PRIVATE_KEY_PATH``, PKCS#1 or PKCS#8, encrypted PKCS#8 with
``TENSORZERO_RSA_PRIVATE_KEY_PASSWORD``. Without either, values are used as they are. Decryption
happens when a model is loaded, never per request; no secret reaches a log line or an error.
"""

from __future__ import annotations

import base64
import binascii
import os
import string
from collections.abc import Mapping

from Crypto.Cipher import PKCS1_OAEP, PKCS1_v1_5
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA

__all__ = ["CredentialDecryptor", "DecryptionError", "KeyLoadError", "load_decryptor"]

_HEX = frozenset(string.hexdigits)


class DecryptionError(Exception):
    """A credential could not be decrypted; the message never holds the secret."""


class KeyLoadError(Exception):
    """The configured private key could not be read or parsed."""


class CredentialDecryptor:
    """Decrypts credentials with one private key, or passes them through when there is none."""

    def __init__(self, key: RSA.RsaKey | None) -> None:
        self._key = key
        self._oaep = PKCS1_OAEP.new(key, hashAlgo=SHA256) if key is not None else None
        self._v15 = PKCS1_v1_5.new(key) if key is not None else None
        # PERF: a 4096-bit private-key operation costs milliseconds; a full resync sees mostly the same
        # ciphertexts, so each is decrypted once. ``retain`` drops those no longer written anywhere.
        self._cache: dict[str, str] = {}

    def retain(self, ciphertexts: set[str]) -> None:
        self._cache = {c: p for c, p in self._cache.items() if c in ciphertexts}

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def decrypt(self, value: str) -> str:
        """The plaintext of ``value`` (hex when all hex digits, else standard base64)."""
        if self._key is None:
            return value
        cached = self._cache.get(value)
        if cached is not None:
            return cached
        plaintext = self._decrypt(value)
        self._cache[value] = plaintext
        return plaintext

    def _decrypt(self, value: str) -> str:
        text = value.strip()
        try:
            ciphertext = bytes.fromhex(text) if text and set(text) <= _HEX else base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raise DecryptionError("the credential is neither hex nor base64") from None
        try:
            plaintext = self._oaep.decrypt(ciphertext)
        except ValueError:
            sentinel = object()
            try:
                plaintext = self._v15.decrypt(ciphertext, sentinel)
            except ValueError:  # e.g. a ciphertext longer than the key
                plaintext = sentinel
            if plaintext is sentinel:
                raise DecryptionError("the credential does not decrypt with the configured key") from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("the decrypted credential is not UTF-8") from None


def load_decryptor(environ: Mapping[str, str] = os.environ) -> CredentialDecryptor:
    """The decryptor the environment configures; raise ``KeyLoadError`` when a configured key is unusable."""
    pem = environ.get("TENSORZERO_RSA_PRIVATE_KEY")
    path = environ.get("TENSORZERO_RSA_PRIVATE_KEY_PATH")
    if not pem and path:
        try:
            with open(path, encoding="utf-8") as f:
                pem = f.read()
        except OSError as e:
            raise KeyLoadError(f"cannot read TENSORZERO_RSA_PRIVATE_KEY_PATH ({path}): {e.strerror}") from None
    if not pem:
        return CredentialDecryptor(None)
    password = environ.get("TENSORZERO_RSA_PRIVATE_KEY_PASSWORD") or None
    try:
        key = RSA.import_key(pem.replace("\\n", "\n"), passphrase=password)
    except (ValueError, IndexError, TypeError):
        raise KeyLoadError("the RSA private key cannot be parsed (wrong format or password)") from None
    if not key.has_private():
        raise KeyLoadError("the configured RSA key is a public key; the gateway needs the private key")
    return CredentialDecryptor(key)
