"""Reading plain dicts (TOML tables, Redis JSON) into config values, collecting errors with key paths."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
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
    """Collects errors while reading plain dicts; each getter returns a default when a value is bad."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        #: Key paths TensorZero defines that the gateway takes without acting on (one warning at start).
        self.unimplemented: list[str] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append(f"{path}: {reason}")

    def table(self, data: Any, path: str, allowed: set[str] | frozenset[str] | None,
              accepted: frozenset[str] = frozenset()) -> dict:
        """``data`` as a table whose keys are ``allowed``; keys in ``accepted`` (TensorZero's, not acted
        on) are no error but are listed in ``unimplemented``."""
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {_kind(data)}")
            return {}
        if allowed is not None:
            for k in data:
                if k in accepted:
                    self.unimplemented.append(f"{path}.{key_path(k)}" if path else key_path(k))
                elif k not in allowed:
                    self.fail(f"{path}.{key_path(k)}" if path else key_path(k), "unknown key")
        return data

    def get(self, data: dict, key: str, path: str, types: tuple[type, ...], default: Any) -> Any:
        if key not in data:
            return default
        value = data[key]
        # NOTE: bool is an int in Python; TOML keeps them apart, and so do we.
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            self.fail(f"{path}.{key}", f"expected {names}, got {_kind(value)}")
            return default
        return value

    def positive(self, data: dict, key: str, path: str, default: Any, *, allow_zero: bool = False) -> Any:
        value = self.get(data, key, path, (int, float), default)
        if value is not default and (value < 0 or value == 0 and not allow_zero):
            self.fail(f"{path}.{key}", f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")
            return default
        return value

    def count(self, data: dict, key: str, path: str, default: int) -> int:
        """A whole number > 0 (a size or a count)."""
        value = self.get(data, key, path, (int,), default)
        if value is not default and value <= 0:
            self.fail(f"{path}.{key}", f"must be > 0, got {value}")
            return default
        return value

    def str_list(self, data: dict, key: str, path: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(data, key, path, (list,), None)
        if value is None:
            return default
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.fail(f"{path}.{key}[{i}]", f"expected a string, got {_kind(item)}")
        return tuple(out)

    def str_map(self, data: dict, key: str, path: str) -> Mapping[str, str]:
        value = self.table(data.get(key, {}), f"{path}.{key}", None)
        for k, v in value.items():
            if not isinstance(v, str):
                self.fail(f"{path}.{key}.{key_path(k)}", f"expected a string, got {_kind(v)}")
        return MappingProxyType({k: v for k, v in value.items() if isinstance(v, str)})


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array", dict: "a table"}


def kind_of(value: Any) -> str:
    """What a TOML value is, in the words of the config's messages (string, integer, table, ...)."""
    return _kind(value)


def _kind(value: Any) -> str:
    for t in (bool, str, int, float, list, dict):
        if isinstance(value, t):
            return _TYPE_NAMES[t].split(" ", 1)[1]
    return type(value).__name__
