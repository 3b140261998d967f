"""JSON out and in for the gateway and its providers, with one set of options and two safety rules.

- Never emit invalid JSON: a non-finite number (NaN, Infinity, or a literal beyond a double, which
  ujson reads as infinity) raises ``NonFiniteNumberError`` instead of being written as ``NaN``.
- Never crash on a lone surrogate (``"\\ud800"``, which JavaScript clients produce by splitting an
  emoji): it cannot be UTF-8, so the text is written with ``\\u`` escapes instead, still valid JSON.
"""

from __future__ import annotations

from typing import Any

import ujson

__all__ = ["NonFiniteNumberError", "dumps", "loads"]


class NonFiniteNumberError(ValueError):
    """A value holds NaN or an infinity, which JSON (RFC 8259, section 6) cannot carry."""


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON bytes.

    Raises:
        NonFiniteNumberError: ``value`` holds NaN or an infinity.
    """
    try:
        text = ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False, allow_nan=False)
    except OverflowError:
        raise NonFiniteNumberError("a number is NaN, Infinity or out of range") from None
    try:
        return text.encode()
    except UnicodeEncodeError:
        # NOTE: rare (a lone surrogate); ASCII output escapes it as \udXXX.
        return ujson.dumps(value, escape_forward_slashes=False, allow_nan=False).encode()


def loads(raw: bytes | str) -> Any:
    """Parse JSON; raises ``ValueError`` when it is not JSON."""
    return ujson.loads(raw)
