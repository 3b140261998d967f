"""The ``azure_content_safety`` guardrail provider against a loopback Content Safety: a text whose
Violence severity reaches the threshold is blocked, one below it passes, the key goes as
``Ocp-Apim-Subscription-Key``, and a provider that refuses the key is a failure of the profile's mode.
And ``/v1/moderations`` for a guarded model, answered by its profile without an upstream call."""

from __future__ import annotations

import pytest
from configs import dummy_provider, model_toml
from upstream_content_safety import KEY, ContentSafetyUpstream

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def safety():
    server = ContentSafetyUpstream().start()
    yield server
    server.stop()


def _profile(profile_id: str, endpoint: str, threshold: int, failure: str = "fail_fast",
             key_env: str = "CS_KEY") -> str:
    return (f'\n[guardrails."{profile_id}"]\nguard_types = ["input"]\nfailure_mode = "{failure}"\n'
            f'[guardrails."{profile_id}".providers.safety]\ntype = "azure_content_safety"\n'
            f'endpoint = "{endpoint}"\napi_key_location = "env::{key_env}"\nseverity_threshold = {threshold}\n'
            f'categories = ["Hate", "Violence"]\ntimeout_ms = 500\n')


def _model(name: str, profile_id: str) -> str:
    return model_toml(name, {"d": dummy_provider("echo")}).replace(
        f'[models."{name}"]\n', f'[models."{name}"]\nguardrail_profile = "{profile_id}"\n')


@pytest.fixture(scope="module")
def gw(module_gateway_factory, safety):
    toml = (_profile("strict", safety.url, 4) + _profile("lenient", safety.url, 7)
            + _profile("wrong-key", safety.url, 4, key_env="CS_WRONG_KEY")
            + _model("strict", "strict") + _model("lenient", "lenient") + _model("wrong-key", "wrong-key"))
    return module_gateway_factory(toml, settings={"workers": 1}, env={"CS_KEY": KEY, "CS_WRONG_KEY": "nope"})


def _chat(gw, model: str, text: str):
    return gw.request("POST", CHAT, {"model": model, "messages": [{"role": "user", "content": text}]})


def test_a_text_at_the_threshold_is_blocked(gw, safety):
    resp = _chat(gw, "strict", "this is forbidden")
    assert resp.status == 400 and resp.json()["error"]["code"] == "content_filter"
    path, headers, body = safety.requests[-1]
    assert path == "/contentsafety/text:analyze" and headers["Ocp-Apim-Subscription-Key"] == KEY
    assert body == {"text": "this is forbidden", "categories": ["Hate", "Violence"], "outputType": "FourSeverityLevels"}


def test_a_clean_text_and_one_below_the_threshold_pass(gw):
    assert _chat(gw, "strict", "hello").status == 200
    assert _chat(gw, "lenient", "this is forbidden").status == 200


def test_a_refused_key_fails_a_fail_fast_profile(gw):
    resp = _chat(gw, "wrong-key", "hello")
    assert resp.status == 502 and resp.json()["error"]["code"] == "guardrail_failure"
    assert "content-safety-test-key" not in gw.log() and "nope" not in resp.body.decode()


def test_moderations_of_a_guarded_model_are_answered_by_its_profile(module_gateway_factory, upstream):
    toml = ('\n[guardrails."pii"]\n[guardrails."pii".providers.local]\ntype = "local"\npii = ["email"]\n'
            'deny_words = ["forbidden"]\naction = "block"\n'
            + model_toml("mod", {"p": {"type": "openai", "model_name": "omni-moderation-latest",
                                       "api_base": upstream.url, "api_key_location": "none"}},
                         endpoints=["moderation"]).replace('[models."mod"]\n',
                                                             '[models."mod"]\nguardrail_profile = "pii"\n'))
    gw = module_gateway_factory(toml, settings={"workers": 1})
    resp = gw.request("POST", "/v1/moderations", {"model": "mod", "input": ["mail a@example.com", "hello"]})
    assert resp.status == 200, resp
    body = resp.json()
    assert body["model"] == "mod" and body["id"].startswith("modr-")
    assert [r["flagged"] for r in body["results"]] == [True, False]
    assert body["results"][0]["categories"] == {"email": True}
    assert body["results"][0]["category_scores"] == {"email": 1.0}
    assert not [r for r in upstream.requests if r.path.endswith("/moderations")], "the upstream is not asked"
