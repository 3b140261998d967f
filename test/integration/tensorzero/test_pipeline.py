"""TensorZero's routes through the same pipeline as OpenAI's: a guarded model's profile scans the
``/inference`` input and answer (and its stream), and ``[gateway.authentication]`` applies."""

from __future__ import annotations

import json

import pytest
from budapp import hash_key
from configs import dummy_provider, guarded_model, local_profile, model_toml

EMAIL = "jane.doe@example.com"
PROFILES = (local_profile("redact-in", ["input"], "redact", pii=["email"])
            + local_profile("block-out", ["output"], "block", deny_words=["secret-plan"]))
FUNCTIONS = """
[functions.echoing]
type = "chat"
[functions.echoing.variants.only]
type = "chat_completion"
model = "redacting"

[functions.mixed]
type = "chat"
[functions.mixed.variants.first]
type = "chat_completion"
model = "guarded-broken"
[functions.mixed.variants.open]
type = "chat_completion"
model = "unguarded"
[functions.mixed.experimentation]
type = "static"
candidate_variants = ["first"]
fallback_variants = ["open"]

[functions.leaky]
type = "chat"
[functions.leaky.variants.only]
type = "chat_completion"
model = "blocking"
"""
KEY = "tz-test-key"


@pytest.fixture(scope="module")
def gw(module_gateway_factory):
    models = (guarded_model("redacting", dummy_provider("echo"), "redact-in")
              + guarded_model("blocking", dummy_provider("echo"), "block-out")
              + guarded_model("guarded-broken", dummy_provider("error"), "redact-in")
              + model_toml("unguarded", {"d": dummy_provider("echo")}) + PROFILES + FUNCTIONS)
    return module_gateway_factory(models)


def _ask(text: str) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}


class TestGuardrails:
    def test_the_input_is_redacted_before_the_upstream(self, gw):
        resp = gw.request("POST", "/inference", {"function_name": "echoing", "input": _ask(f"mail {EMAIL}")})
        assert resp.status == 200, resp
        text = resp.json()["content"][0]["text"]
        assert EMAIL not in text and "[REDACTED_EMAIL]" in text

    def test_an_answer_is_withheld_with_content_filter(self, gw):
        resp = gw.request("POST", "/inference", {"function_name": "leaky", "input": _ask("the secret-plan is")})
        assert resp.status == 200
        assert resp.json()["content"] == [] and resp.json()["finish_reason"] == "content_filter"

    def test_a_stream_is_held_back_and_blocked(self, gw):
        resp = gw.request("POST", "/inference", {"function_name": "leaky", "input": _ask("the secret-plan is"),
                                                 "stream": True})
        assert "secret-plan" not in resp.body.decode()
        chunks = [json.loads(d) for d in resp.sse_data() if d != "[DONE]"]
        assert chunks[-1]["finish_reason"] == "content_filter"

    def test_no_fallback_to_a_variant_guarded_otherwise(self, gw):
        resp = gw.request("POST", "/inference", {"function_name": "mixed", "input": _ask(f"mail {EMAIL}")})
        assert resp.status == 502, resp  # the open variant would have run under the first one's scan

    def test_the_openai_route_to_a_function_is_scanned_too(self, gw):
        client = gw.openai()
        answer = client.chat.completions.create(model="tensorzero::function_name::echoing",
                                                messages=[{"role": "user", "content": f"mail {EMAIL}"}])
        assert EMAIL not in answer.choices[0].message.content


@pytest.fixture(scope="module")
def secured(module_gateway_factory):
    grant = f'\n[api_keys."{hash_key(KEY)}".echo]\nendpoint_id = "echo"\nmodel_id = "m"\nproject_id = "p"\n'
    functions = ('\n[functions.hello]\ntype = "chat"\n[functions.hello.variants.v]\ntype = "chat_completion"\n'
                 'model = "echo"\n'
                 '\n[functions.elsewhere]\ntype = "chat"\n[functions.elsewhere.variants.v]\ntype = "chat_completion"\n'
                 'model = "other"\n')
    return module_gateway_factory(model_toml("echo", {"d": dummy_provider("echo")})
                                  + model_toml("other", {"d": dummy_provider("echo")}) + grant + functions,
                                  settings={"authentication.enabled": True})


class TestAuthentication:
    def test_inference_needs_a_key(self, secured):
        body = {"function_name": "hello", "input": _ask("hi")}
        assert secured.request("POST", "/inference", body).status == 401
        ok = secured.request("POST", "/inference", body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status == 200, ok

    def test_a_function_reaches_only_the_models_the_key_is_granted(self, secured):
        auth = {"Authorization": f"Bearer {KEY}"}
        resp = secured.request("POST", "/inference", {"function_name": "elsewhere", "input": _ask("hi")},
                               headers=auth)
        assert resp.status == 404

    def test_model_name_goes_through_the_keys_grants(self, secured):
        auth = {"Authorization": f"Bearer {KEY}"}
        assert secured.request("POST", "/inference", {"model_name": "echo", "input": _ask("hi")},
                               headers=auth).status == 200
        assert secured.request("POST", "/inference", {"model_name": "dummy::echo", "input": _ask("hi")},
                               headers=auth).status == 404
