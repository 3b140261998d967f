"""Fuzz: random bodies, header sets and paths against every route of the app (falcon's test client, no sockets).

Every answer must be a success or an error of its route's API shape with a 4xx or 502 status, never a
500; a stream must end with its end marker or an error event, never a cut.
"""

from __future__ import annotations

import json
import os

import pytest
from configs import DUMMY_APP_CONFIG
from falcon import testing
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import request_bodies, texts

from gateway.app import create_app
from gateway.config import load_config_text
from providers.registry import build_registry

INFERENCE = ["/chat/completions", "/completions", "/embeddings", "/moderations", "/images/generations",
             "/audio/speech", "/responses", "/audio/transcriptions", "/audio/translations", "/images/edits",
             "/images/variations"]
ROUTES = [prefix + path for prefix in ("/v1", "/openai/v1") for path in INFERENCE] + ["/v1/messages"]
OTHER = ["/v1/models", "/v1/models/echo", "/v1/models/x%00y", "/health", "/status", "/metrics", "/", "/v1/../etc"]
CONTENT_TYPES = ["application/json", "multipart/form-data; boundary=b", "multipart/form-data", "text/plain", ""]
#: Cases per test; ``BUDGATEWAY_FUZZ=explore`` multiplies them by ten, with new random ones.
EXAMPLES = 700 * (10 if os.environ.get("BUDGATEWAY_FUZZ") == "explore" else 1)


@pytest.fixture(scope="module")
def client():
    registry = build_registry()
    return testing.TestClient(create_app(load_config_text(DUMMY_APP_CONFIG, "fuzz.toml", registry), registry))


def _check(path: str, result) -> None:
    status = result.status_code
    assert status != 500 and status < 600, (path, status, result.content[:500])
    if result.headers.get("content-type", "").startswith("text/event-stream"):
        body = result.content
        if path == "/v1/messages":
            assert b"event: message_stop" in body or b"event: error" in body, body[-300:]
        else:
            assert body.endswith(b"data: [DONE]\n\n") or b'"error"' in body.rsplit(b"data: ", 1)[-1], body[-300:]
        return
    if status >= 400:
        assert 400 <= status < 500 or status in (502, 503, 504), (path, status)
        body = json.loads(result.content)
        if path == "/v1/messages":
            assert body["type"] == "error"
            assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)
        else:
            error = body["error"]
            assert isinstance(error["message"], str) and isinstance(error["type"], str)
            assert set(error) == {"message", "type", "param", "code"}


@settings(max_examples=EXAMPLES)
@given(path=st.sampled_from(ROUTES), body=request_bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_any_body_on_any_route_gets_an_answer_of_its_shape(client, path, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    _check(path, client.simulate_post(path, body=body, headers=headers))


_header_names = st.sampled_from(["X-Request-Id", "Authorization", "x-api-key", "Accept", "User-Agent",
                                 "Content-Encoding", "X-Forwarded-For", "traceparent"])


@settings(max_examples=EXAMPLES // 2)
@given(headers=st.dictionaries(_header_names, texts.map(lambda t: t.encode("utf-8", "surrogatepass")
                                                        .decode("latin-1")), max_size=4),
       body=request_bodies)
def test_any_header_set_gets_an_answer_of_its_shape(client, headers, body):
    headers = {k: v for k, v in headers.items() if "\r" not in v and "\n" not in v and "\x00" not in v}
    headers.setdefault("Content-Type", "application/json")
    _check("/v1/chat/completions", client.simulate_post("/v1/chat/completions", body=body, headers=headers))


@settings(max_examples=EXAMPLES // 4)
@given(path=st.sampled_from(OTHER + ROUTES), method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
def test_any_method_on_any_path_gets_an_answer_of_its_shape(client, path, method):
    _check(path, client.simulate_request(method, path))
