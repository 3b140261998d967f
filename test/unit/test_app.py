"""Resources and pipeline through falcon.testing, with the in-process dummy provider (no sockets)."""

import pytest
import ujson
from configs import DUMMY_APP_CONFIG
from falcon import testing

from gateway.app import create_app
from gateway.config import load_config_text
from providers.registry import build_registry

MESSAGES = [{"role": "user", "content": "ping"}]


@pytest.fixture()
def client():
    registry = build_registry()
    return testing.TestClient(create_app(load_config_text(DUMMY_APP_CONFIG, "t.toml", registry), registry))


def chat(client, body, **kw):
    return client.simulate_post("/v1/chat/completions", body=ujson.dumps(body), **kw)


def error_of(result):
    return result.json["error"]


class TestChat:
    def test_plain_answer_keeps_the_client_model_name(self, client):
        r = chat(client, {"model": "tensorzero::model_name::echo", "messages": MESSAGES})
        assert r.status_code == 200
        assert r.json["model"] == "tensorzero::model_name::echo"
        assert r.json["choices"][0]["message"]["content"] == "ping"
        assert r.headers["x-budgateway-provider"] == "echo/d"
        assert r.headers["x-budgateway-attempts"] == "1"
        assert float(r.headers["x-budgateway-overhead-ms"]) >= 0

    def test_request_id_is_echoed_or_made(self, client):
        assert chat(client, {"model": "text", "messages": MESSAGES}, headers={"x-request-id": "abc"}).headers["x-request-id"] == "abc"
        assert len(chat(client, {"model": "text", "messages": MESSAGES}).headers["x-request-id"]) == 36

    def test_stream_ends_with_done_and_usage(self, client):
        r = chat(client, {"model": "text", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})
        assert r.headers["content-type"] == "text/event-stream"
        events = [e[6:] for e in r.text.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        chunks = [ujson.loads(e) for e in events[:-1]]
        assert all(c["model"] == "text" for c in chunks)
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]).startswith("Hello")
        assert chunks[-1]["usage"]["total_tokens"] > 0

    def test_chain_falls_back_through_providers_and_models(self, client):
        r = chat(client, {"model": "chain", "messages": MESSAGES})
        assert r.status_code == 200
        assert r.headers["x-budgateway-provider"] == "echo/d"
        assert r.headers["x-budgateway-attempts"] == "3"

    def test_retry_config_retries_the_chain(self, client):
        r = chat(client, {"model": "flaky", "messages": MESSAGES})
        assert r.status_code == 200 and r.headers["x-budgateway-attempts"] == "2"

    def test_all_rate_limited_is_429(self, client):
        r = chat(client, {"model": "limited", "messages": MESSAGES})
        assert r.status_code == 429
        assert error_of(r)["code"] == "all_providers_failed"
        assert "limited/a: HTTP 429" in error_of(r)["message"]

    def test_timeouts_are_504(self, client):
        assert chat(client, {"model": "slow", "messages": MESSAGES}).status_code == 504
        assert chat(client, {"model": "slow", "messages": MESSAGES, "stream": True}).status_code == 504


class TestRequestErrors:
    @pytest.mark.parametrize(
        "body, status, code, param",
        [
            (b"{not json", 400, "invalid_json", None),
            (b"[1, 2]", 400, "invalid_json", None),
            (b"", 400, "invalid_json", None),
            (b'{"messages": []}', 400, "missing_required_parameter", "model"),
            (b'{"model": "text"}', 400, "missing_required_parameter", "messages"),
            (b'{"model": 5, "messages": []}', 400, None, "model"),
            (b'{"model": "text", "messages": "hi"}', 400, None, "messages"),
            (b'{"model": "nope", "messages": []}', 404, "model_not_found", "model"),
            (b'{"model": "embed", "messages": []}', 400, "unsupported_capability", "model"),
        ],
    )
    def test_bad_bodies(self, client, body, status, code, param):
        r = client.simulate_post("/v1/chat/completions", body=body)
        assert r.status_code == status
        e = error_of(r)
        assert (e["code"], e["param"], e["type"]) == (code, param, "invalid_request_error")
        assert e["message"]

    def test_body_over_the_limit_is_413(self, client):
        r = chat(client, {"model": "text", "messages": [{"role": "user", "content": "x" * 3000}]})
        assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"

    def test_wrong_method_is_405(self, client):
        r = client.simulate_get("/v1/chat/completions")
        assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"

    def test_unknown_path_is_404(self, client):
        r = client.simulate_post("/v1/nothing")
        assert r.status_code == 404 and error_of(r)["message"] == "Invalid URL (POST /v1/nothing)"


class TestOtherRoutes:
    def test_models(self, client):
        data = client.simulate_get("/v1/models").json
        assert data["object"] == "list"
        assert {m["id"] for m in data["data"]} == {"text", "chain", "echo", "limited", "flaky", "slow", "embed"}
        assert set(data["data"][0]) == {"id", "object", "created", "owned_by", "capabilities"}
        assert next(m for m in data["data"] if m["id"] == "embed")["capabilities"] == ["embedding"]

    def test_one_model(self, client):
        assert client.simulate_get("/v1/models/echo").json["id"] == "echo"
        assert error_of(client.simulate_get("/v1/models/zzz"))["code"] == "model_not_found"

    def test_health_and_status(self, client):
        assert client.simulate_get("/health").json == {"gateway": "ok"}
        assert client.simulate_get("/status").json["status"] == "ok"

    def test_metrics_count_requests(self, client):
        chat(client, {"model": "text", "messages": MESSAGES})
        text = client.simulate_get("/metrics").text
        assert 'budgateway_requests_total{model="text",provider="d",route="/v1/chat/completions",status="200"} 1.0' in text
        assert "budgateway_request_duration_seconds_bucket" in text
