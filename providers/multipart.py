"""Encoding a multipart/form-data body (RFC 7578) for an upstream, with the file bytes never copied."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from providers.base import Form

__all__ = ["encode_form"]


def _quote(value: str) -> str:
    # RFC 7578 section 4.2: names and filenames are quoted strings; escape what would end them.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def encode_form(form: Form, overrides: Mapping[str, str]) -> tuple[str, list[bytes]]:
    """The content type and the body pieces of ``form``, with ``overrides`` replacing text fields of those names.

    Each file's bytes are a piece of their own, sent as they are.
    """
    boundary = uuid.uuid4().hex
    dash = f"--{boundary}\r\n".encode()
    pieces: list[bytes] = []
    seen = set()
    for name, value in form.fields:
        if name in overrides:
            if name in seen:
                continue
            seen.add(name)
            value = overrides[name]
        pieces.append(dash + f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{value}\r\n'.encode())
    for name, value in overrides.items():
        if name not in seen:
            pieces.append(dash + f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{value}\r\n'.encode())
    for part in form.files:
        pieces.append(
            dash
            + (
                f'Content-Disposition: form-data; name="{_quote(part.name)}"; filename="{_quote(part.filename)}"\r\n'
                f"Content-Type: {part.content_type}\r\n\r\n"
            ).encode()
        )
        pieces.append(part.data)
        pieces.append(b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", pieces
