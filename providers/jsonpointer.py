"""TensorZero's ``extra_body`` edits: a value set at a JSON Pointer (RFC 6901), or the member there
deleted; ``-`` as the last step appends to an array, and missing objects on the way are made."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["PointerError", "apply_edits", "apply_request_edits", "pointed"]


class PointerError(ValueError):
    """An edit that cannot apply to the body (its pointer runs through a string, say)."""


def _steps(pointer: str) -> list[str]:
    if pointer == "":
        raise PointerError("the empty pointer would replace the whole body")
    if not pointer.startswith("/"):
        raise PointerError(f"pointer {pointer!r} must start with '/'")
    return [step.replace("~1", "/").replace("~0", "~") for step in pointer[1:].split("/")]


def pointed(document: Any, pointer: str) -> Any:
    """What ``pointer`` points at in ``document``; None where nothing is."""
    try:
        steps = _steps(pointer)
    except PointerError:
        return None
    node = document
    for step in steps:
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node


def apply_edits(body: dict[str, Any], edits: Iterable[Mapping[str, Any]]) -> None:
    """Apply ``edits`` to ``body`` in place, in order."""
    for edit in edits:
        pointer = edit["pointer"]
        steps = _steps(pointer)
        node: Any = body
        for step in steps[:-1]:
            if isinstance(node, dict):
                node = node.setdefault(step, {})
            elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
                node = node[int(step)]
            else:
                raise PointerError(f"pointer {pointer!r}: no object or array at {step!r}")
        last = steps[-1]
        if edit.get("delete"):
            if isinstance(node, dict):
                node.pop(last, None)
            elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
                del node[int(last)]
            continue
        # NOTE: a copy: a config's value must never become part of (and be edited in) one request's body.
        value = copy.deepcopy(edit.get("value"))
        if isinstance(node, dict):
            node[last] = value
        elif isinstance(node, list) and last == "-":
            node.append(value)
        elif isinstance(node, list) and last.isdigit() and int(last) <= len(node):
            node[int(last):int(last) + 1] = [value]
        else:
            raise PointerError(f"pointer {pointer!r}: cannot set {last!r} there")


def apply_request_edits(body: dict[str, Any], edits: Iterable[Mapping[str, Any]]) -> None:
    """A request's own edits: one that cannot apply to this provider's body is the client's 400."""
    from providers.base import ProviderHTTPError

    try:
        apply_edits(body, edits)
    except PointerError as e:
        raise ProviderHTTPError(400, f"extra_body: {e}", type_="invalid_request_error", param="extra_body") from None
