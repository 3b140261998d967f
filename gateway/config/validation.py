"""Config tables read through pydantic models, their errors told the way the rest of the config
tells them: one ``key.path: reason`` line per problem, every problem at once.

Models are strict (``StrictTable``: no unknown keys, no "5" taken for 5, no true for 1) and their
errors say what the hand-written checks said: ``expected an integer, got string``, ``must be > 0,
got 0``, ``unknown key``, ``missing``. A field validator that raises ``ValueError("reason")`` gives
that reason as it is.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.config.checker import Checker, key_path, kind_of

__all__ = ["StrictTable", "read_table"]


class StrictTable(BaseModel):
    """The base of a config table's model."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


M = TypeVar("M", bound=BaseModel)

#: Errors that say only that a value is not of one union member's shape.
_SHAPE_ERRORS = frozenset({"dict_type", "list_type", "model_type", "model_attributes_type", "is_instance_of"})
#: pydantic's error types, said in the config's words.
_REASONS = {
    "extra_forbidden": "unknown key",
    "missing": "missing",
}
#: Type errors: what was expected.
_EXPECTED = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
             "float_type": "an integer or a number", "float_parsing": "a number", "string_type": "a string",
             "bool_type": "a boolean", "bool_parsing": "a boolean", "list_type": "an array",
             "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table"}
#: Bounds, as the checker says them.
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def read_table(c: Checker, model: type[M], data: Any, path: str) -> M | None:
    """``data`` as a ``model``; None (with the errors added to ``c``) when it is not one."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        found = [(_path(path, data, error["loc"]), _reason(error), error["type"])
                 for error in e.errors(include_url=False)]
        seen = set()
        for where, reason, kind in found:
            # NOTE: a value that is none of a union's members gets one error per member; a member's
            # "not a table / not a list" goes when another member's error says more.
            if kind in _SHAPE_ERRORS and any((w == where or w.startswith((where + ".", where + "[")))
                                             and k != kind for w, _, k in found):
                continue
            if (where, reason) not in seen:
                seen.add((where, reason))
                c.fail(where, reason)
        return None


def _path(prefix: str, data: Any, loc: tuple) -> str:
    """The key path of ``loc`` in ``data``: pydantic puts the tag of a tagged union and the member of
    a union it tried into ``loc``; those are not keys of the data and are left out."""
    parts = [prefix] if prefix else []
    value = data
    for item in loc:
        if isinstance(item, int) and isinstance(value, list):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
            value = value[item] if item < len(value) else None
        elif isinstance(value, dict) and item in value:
            parts.append(key_path(str(item)))
            value = value[item]
        elif isinstance(item, str) and not _member(item, value):
            parts.append(key_path(item))  # a missing key
            value = None
    return ".".join(parts)


def _member(item: str, value: Any) -> bool:
    """Whether ``item`` of a ``loc`` names a union member pydantic tried, or the tag it chose."""
    if isinstance(value, dict) and value.get("type") == item:
        return True
    return item[:1].isupper() or "[" in item or item in ("str", "int", "float", "bool", "literal")


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _reason(error: dict) -> str:
    kind = error["type"]
    if kind in _REASONS:
        return _REASONS[kind]
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {kind_of(error.get('input'))}"
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"must be {sign} {_number(error['ctx'][key])}, got {error.get('input')}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"expected {expected}".replace("'", '"')
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        return f'unknown type {error.get("ctx", {}).get("tag")!r} (one of: {tags})'.replace("'", '"')
    message = error["msg"]
    return message[0].lower() + message[1:]
