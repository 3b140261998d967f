"""Collecting config errors with their key paths (the tables themselves are read by pydantic models, see
``validation``), and the words the messages use for TOML values."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Checker", "ConfigError", "key_path", "kind_of"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(Exception):
    """The config is invalid; ``errors`` holds one ``path: reason`` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__("\n".join(f"{source}: {e}" for e in errors))


def key_path(name: str) -> str:
    return name if _BARE_KEY.match(name) else f'"{name}"'


class Checker:
    """The errors (and the TensorZero keys taken unused) of one config, as its tables are read."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        #: Key paths TensorZero defines that the gateway takes without acting on (one warning at start).
        self.unimplemented: list[str] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append(f"{path}: {reason}")

    def table(self, data: Any, path: str, allowed: set[str] | frozenset[str] | None) -> dict:
        """``data`` as a table of names (models, providers, functions...) or of ``allowed`` keys."""
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {_kind(data)}")
            return {}
        if allowed is not None:
            for k in data:
                if k not in allowed:
                    self.fail(f"{path}.{key_path(k)}" if path else key_path(k), "unknown key")
        return data


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array", dict: "a table"}


def kind_of(value: Any) -> str:
    """What a TOML value is, in the words of the config's messages (string, integer, table, ...)."""
    return _kind(value)


def _kind(value: Any) -> str:
    for t in (bool, str, int, float, list, dict):
        if isinstance(value, t):
            return _TYPE_NAMES[t].split(" ", 1)[1]
    return type(value).__name__
