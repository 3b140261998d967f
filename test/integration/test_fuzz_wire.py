"""Fuzz: random request heads, header sets and byte strings at a real gateway's socket.

Whatever arrives, the gateway answers with well-formed HTTP (an error in its API's JSON shape, never a
500) or closes the connection; it never hangs, never logs a traceback, and its worker stays up.
"""

from __future__ import annotations

import json
import os

import pytest
from configs import dummy_provider, model_toml
from hypothesis import given, settings
from hypothesis import strategies as st
from rawhttp import talk

EXAMPLES = 300 * (10 if os.environ.get("BUDGATEWAY_FUZZ") == "explore" else 1)
# The server answers a complete head at once; an incomplete one ends when the client shuts its side.
QUIET_S = 2.0

_token = st.text(alphabet="!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=1,
                 max_size=12)
_methods = st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "CONNECT", "PRI", "TRACE"]) | _token
_paths = st.sampled_from(["/v1/chat/completions", "/v1/messages", "/health", "/v1/models", "*", "/v1/embeddings",
                          "http://evil.example/v1/chat/completions", "/%00", "/v1/chat/completions?x=1"]) | \
    st.binary(max_size=30).map(lambda b: "/" + b.decode("latin-1"))
_versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x", ""])
_names = st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Expect", "Connection", "Content-Type",
                          "X-Request-Id", "Authorization", "Upgrade", "Trailer"]) | _token
_values = st.sampled_from(["0", "5", "chunked", "100-continue", "close", "keep-alive", "application/json",
                           "multipart/form-data; boundary=x", "-1", "gzip, chunked", "websocket"]) | \
    st.binary(max_size=20).map(lambda b: b.decode("latin-1"))
_bodies = st.sampled_from([b"", b"0\r\n\r\n", b'{"model": "echo", "messages": [{"role": "user", "content": "x"}]}',
                           b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n"]) | st.binary(max_size=80)


@st.composite
def requests(draw) -> bytes:
    line = f"{draw(_methods)} {draw(_paths)} {draw(_versions)}".encode("latin-1")
    fields = draw(st.lists(st.tuples(_names, _values), max_size=6))
    head = b"\r\n".join([line] + [f"{n}: {v}".encode("latin-1") for n, v in fields])
    return head + draw(st.sampled_from([b"\r\n\r\n", b"\r\n", b"\n\n", b""])) + draw(_bodies)


@pytest.fixture(scope="module")
def gw(module_gateway_factory):
    return module_gateway_factory(model_toml("echo", {"d": dummy_provider("echo")}),
                                  settings={"header_timeout_s": 1, "body_timeout_s": 1})


def _check(conversation) -> None:
    assert not conversation.reset or conversation.raw, "a reset before any answer"
    for answer in conversation.answers:
        assert answer.status != 500, conversation.raw[:500]
        if answer.status >= 400 and answer.body:
            body = answer.json()
            error = body["error"]
            assert isinstance(error["message"], str) and isinstance(error["type"], str)


@settings(max_examples=EXAMPLES)
@given(data=requests())
def test_any_request_gets_well_formed_http_or_a_close(gw, data):
    _check(talk(gw.port, data, quiet_s=QUIET_S, shut_write=True))


@settings(max_examples=EXAMPLES // 3)
@given(data=st.binary(min_size=1, max_size=200))
def test_any_bytes_get_well_formed_http_or_a_close(gw, data):
    _check(talk(gw.port, data, quiet_s=QUIET_S, shut_write=True))


def test_the_worker_survived_the_fuzzing(gw):
    assert gw.request("GET", "/health").json() == {"gateway": "ok"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "still here"}]}
    assert json.loads(gw.request("POST", "/v1/chat/completions", body).body)["choices"][0]["message"]["content"] \
        == "still here"
    assert "Traceback" not in gw.log()
