"""Client errors over raw HTTP: every one is an OpenAI-shaped JSON error with the right status and code."""

from __future__ import annotations

import openai
import pytest
from configs import dummy_provider, model_toml

MAX_BODY_BYTES = 64 * 1024
MESSAGES = [{"role": "user", "content": "hi"}]

MODELS = "".join([
    model_toml("gpt", {"d": dummy_provider("hello")}),
    model_toml("embedder", {"d": dummy_provider("hello")}, endpoints=["embedding"]),
])


@pytest.fixture(scope="module")
def gw(module_gateway_factory):
    return module_gateway_factory(MODELS, settings={"max_body_bytes": MAX_BODY_BYTES})


def _error(resp, status: int) -> dict:
    assert resp.status == status, resp
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body["error"]


def _chat(gw, body: object, **kwargs):
    return gw.request("POST", "/v1/chat/completions", body, **kwargs)


class TestRequestErrors:
    def test_malformed_json_is_400_invalid_json(self, gw):
        error = _error(_chat(gw, b'{"model": "gpt", "messages": ['), 400)
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json")

    @pytest.mark.parametrize("missing", ["model", "messages"])
    def test_missing_required_parameter_is_400(self, gw, missing):
        body = {"model": "gpt", "messages": MESSAGES}
        del body[missing]
        error = _error(_chat(gw, body), 400)
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error", "missing_required_parameter", missing)

    @pytest.mark.parametrize("model", ["no-such-model", "tensorzero::model_name::no-such-model"])
    def test_unknown_model_is_404_model_not_found(self, gw, model):
        error = _error(_chat(gw, {"model": model, "messages": MESSAGES}), 404)
        assert error["code"] == "model_not_found"

    def test_model_without_chat_capability_is_400(self, gw):
        error = _error(_chat(gw, {"model": "embedder", "messages": MESSAGES}), 400)
        assert error["code"] == "unsupported_capability"

    def test_body_over_max_body_bytes_is_413(self, gw):
        big = {"model": "gpt", "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1024)}]}
        _error(_chat(gw, big), 413)

    def test_body_just_under_max_body_bytes_is_served(self, gw):
        body = {"model": "gpt", "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES - 1024)}]}
        assert _chat(gw, body).status == 200

    def test_sdk_reports_the_error_code(self, gw):
        with pytest.raises(openai.NotFoundError) as exc_info:
            gw.openai().chat.completions.create(model="no-such-model", messages=MESSAGES)
        assert exc_info.value.code == "model_not_found"


class TestRoutingErrors:
    def test_wrong_method_is_405(self, gw):
        _error(gw.request("GET", "/v1/chat/completions"), 405)

    @pytest.mark.parametrize("path", ["/v1/no-such-endpoint", "/nothing-here"])
    def test_unknown_path_is_404(self, gw, path):
        _error(gw.request("GET", path), 404)
