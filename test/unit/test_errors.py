"""The OpenAI error shape, provider error mapping and the all-failed status choice."""

import ujson

from gateway.errors import MissingParameterError, ModelNotFoundError, UnsupportedCapabilityError
from gateway.routing import AllProvidersFailedError
from providers.base import ProviderConnectionError, ProviderHTTPError, ProviderTimeout
from providers.openai import openai_error


class TestErrorShape:
    def test_missing_parameter(self):
        body = ujson.loads(MissingParameterError("messages").to_bytes())
        assert body == {
            "error": {
                "message": "Missing required parameter: 'messages'",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "missing_required_parameter",
            }
        }

    def test_model_not_found(self):
        e = ModelNotFoundError("x")
        assert e.status == 404 and e.code == "model_not_found" and str(e) == "Model not found: x"

    def test_unsupported_capability(self):
        e = UnsupportedCapabilityError("emb", "chat")
        assert (e.status, e.code, str(e)) == (400, "unsupported_capability", "Model emb does not support chat")


class TestOpenAIErrorMapping:
    def test_openai_shaped_body(self):
        e = openai_error(400, b'{"error":{"message":"bad tool","type":"invalid_request_error","param":"tools","code":"x"}}')
        assert (e.status, str(e), e.type, e.param, e.code, e.retryable) == (400, "bad tool", "invalid_request_error", "tools", "x", False)

    def test_detail_body(self):
        assert str(openai_error(422, b'{"detail":"nope"}')) == "nope"

    def test_non_json_body_is_not_copied_into_the_message(self):
        e = openai_error(503, b"<html>down at 10.1.2.3</html>")
        assert str(e) == "upstream answered HTTP 503 with a body that is not JSON" and e.retryable
        assert e.raw == b"<html>down at 10.1.2.3</html>"

    def test_empty_body(self):
        assert str(openai_error(500, b"")) == "upstream answered HTTP 500"

    def test_429_is_retryable(self):
        assert openai_error(429, b"{}").retryable


class TestAllProvidersFailed:
    def test_mixed_failures_are_502(self):
        e = AllProvidersFailedError("m", [("m/a", ProviderTimeout("t")), ("m/b", ProviderConnectionError("refused"))])
        assert e.status == 502 and e.code == "all_providers_failed"
        assert "m/a: timeout" in str(e) and "m/b: connection error" in str(e)
        assert "refused" not in str(e), "the detail is for the log, not the client"

    def test_all_rate_limited_is_429(self):
        e = AllProvidersFailedError("m", [("m/a", ProviderHTTPError(429, "slow down"))] * 2)
        assert (e.status, e.type) == (429, "rate_limit_error")

    def test_all_timed_out_is_504(self):
        assert AllProvidersFailedError("m", [("m/a", ProviderTimeout("t"))]).status == 504
