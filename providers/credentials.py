"""Provider credentials: ``api_key_location`` parsing, resolution at load time, and ``Secret``."""

from __future__ import annotations

import os
from collections.abc import Mapping

from providers.base import CredentialError

__all__ = ["Credential", "LOCATION_KINDS", "Secret", "parse_location"]

LOCATION_KINDS = ("env", "path", "path_from_env", "dynamic")


class Secret:
    """A credential value whose ``repr`` and ``str`` never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(****)"

    __str__ = __repr__


def parse_location(location: str) -> tuple[str, str]:
    """Split ``"kind::arg"`` (or ``"none"``); raise ``ValueError`` with the reason when malformed."""
    if location == "none":
        return "none", ""
    kind, sep, arg = location.partition("::")
    if not sep or kind not in LOCATION_KINDS or not arg:
        raise ValueError(
            f'invalid api_key_location "{location}": expected "env::VAR", "path::FILE", '
            '"path_from_env::VAR", "dynamic::NAME" or "none"'
        )
    return kind, arg


class Credential:
    """A provider's credential, resolved once at config load.

    ``get()`` is what a request calls: it returns the secret (or ``None`` for no key) or raises
    ``CredentialError``, which fails the attempt so the chain moves on.
    """

    __slots__ = ("location", "_secret", "_error", "_dynamic", "_store")

    def __init__(self, location: str, store: Mapping[str, Secret] | None = None) -> None:
        self.location = location
        self._secret: Secret | None = None
        self._error: str | None = None
        self._dynamic: str | None = None
        self._store = store if store is not None else {}
        kind, arg = parse_location(location)
        if kind == "env":
            value = os.environ.get(arg)
            if value:
                self._secret = Secret(value)
            else:
                self._error = f"environment variable {arg} is not set"
        elif kind == "path":
            self._read_file(arg)
        elif kind == "path_from_env":
            path = os.environ.get(arg)
            if path:
                self._read_file(path)
            else:
                self._error = f"environment variable {arg} (a credential file path) is not set"
        elif kind == "dynamic":
            self._dynamic = arg

    def _read_file(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as e:
            self._error = f"cannot read credential file {path}: {e.strerror}"
            return
        if value:
            self._secret = Secret(value)
        else:
            self._error = f"credential file {path} is empty"

    @property
    def error(self) -> str | None:
        """Why the credential cannot be read at load time (``None`` when it can, or is dynamic)."""
        return self._error

    def get(self) -> Secret | None:
        if self._secret is not None:
            return self._secret
        if self._dynamic is not None:
            try:
                return self._store[self._dynamic]
            except KeyError:
                raise CredentialError(f"dynamic credential {self._dynamic} is not available") from None
        if self._error is not None:
            raise CredentialError(f"credential unavailable: {self._error}")
        return None

    def __repr__(self) -> str:
        return f"Credential({self.location!r})"
