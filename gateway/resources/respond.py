"""Writing JSON answers: one serialiser, one set of options, for every resource."""

from __future__ import annotations

from typing import Any

import falcon
import ujson

__all__ = ["dump_json", "json_response"]


def dump_json(obj: Any) -> bytes:
    return ujson.dumps(obj, escape_forward_slashes=False, ensure_ascii=False).encode()


def json_response(resp: falcon.Response, obj: Any) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = dump_json(obj)
