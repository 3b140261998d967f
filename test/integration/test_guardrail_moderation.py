"""The ``openai`` guardrail provider (OpenAI's ``/v1/moderations``) through a running gateway: input
blocks, what the moderation upstream receives, probe categories and severity thresholds, whole answers
flagged on the way out, parallel and sequential profiles, and the failure modes when the moderation
upstream hangs or refuses connections.

The scripted OpenAI upstream answers both the chat completions and the moderations: an input containing
``FLAGGED_WORD`` scores ``FLAGGED_SCORE`` for violence, every other category ``CLEAN_SCORE``. A hanging
moderation upstream is a ``RawUpstream`` script that reads the request and never answers.
"""

from __future__ import annotations

import json
import time

import pytest
from configs import dummy_provider, guarded_model, openai_provider, toml_value
from upstream import CONTENT, FLAGGED_WORD, refused_base_url
from upstream_raw import response
from upstream_wire import HANG_LIMIT_S, POLL_S

#: What the scripted moderation upstream scores a flagged text (violence) and every other category.
FLAGGED_SCORE = 0.97
CLEAN_SCORE = 0.001
#: The moderation model the provider's probe_config names, and the second provider's in parallel profiles.
PROBE_MODEL = "omni-moderation-latest"
SECOND_PROBE_MODEL = "text-moderation-stable"
#: The raw upstream's moderation model that reads the request and never answers.
HANG_MODEL = "moderation-hangs"
#: The raw upstream's moderation model that answers 200 with a body that is not JSON.
GARBAGE_MODEL = "moderation-garbage"
#: The scripted upstream's model that answers every request 503.
ERROR_MODEL = "status-503"
#: A short per-call timeout for the failing providers, and a generous bound that only says "it did not
#: hang": three attempts of TIMEOUT_MS plus backoff are about a second.
TIMEOUT_MS = 300
NO_HANG_S = 6.0
ATTEMPTS = 3
RECORD_WAIT_S = 2.0
KEY_ENV, KEY = "BUDGATEWAY_TEST_MODERATION_KEY", "sk-moderation-test-key"
FAILURES = "budgateway_guardrail_failures_total"

FLAGGED_TEXT = f"this text is {FLAGGED_WORD} to say"
CLEAN_TEXT = "what is the weather like"
BLOCKED_INPUT = {"error": {"message": "Input content violates content policy", "type": "invalid_request_error",
                           "param": None, "code": "content_filter"}}


def _provider(api_base: str, probes: dict[str, list[str]] | None = None, **keys: object) -> dict[str, object]:
    """An ``openai`` guardrail provider table; no key goes to the moderation upstream unless asked."""
    return {"type": "openai", "api_base": api_base, "api_key_location": "none",
            "probe_config": probes if probes is not None else {PROBE_MODEL: []}, **keys}


def _profile(profile_id: str, providers: dict[str, dict[str, object]], **keys: object) -> str:
    """A ``[guardrails."ID"]`` table (input-only unless ``guard_types`` says otherwise) and its providers."""
    keys = {"guard_types": ["input"], **keys}
    text = f'\n[guardrails."{profile_id}"]\n' + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
    for name, table in providers.items():
        text += f'[guardrails."{profile_id}".providers.{name}]\n'
        text += "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
    return text


def _config(upstream, raw_upstream) -> str:
    mod = upstream.url
    hang = raw_upstream.url
    failing = {"timeout_ms": TIMEOUT_MS}
    profiles = {
        "mod": _profile("mod", {"openai": _provider(mod)}),
        "mod-keyed": _profile("mod-keyed", {"openai": _provider(mod, api_key_location=f"env::{KEY_ENV}")}),
        "mod-hate": _profile("mod-hate", {"openai": _provider(mod, {PROBE_MODEL: ["hate"]})}),
        "mod-violence": _profile("mod-violence", {"openai": _provider(mod, {PROBE_MODEL: ["hate", "violence"]})}),
        "mod-high": _profile("mod-high", {"openai": _provider(mod, severity_threshold=0.98)}),
        "mod-at-score": _profile("mod-at-score", {"openai": _provider(mod, severity_threshold=FLAGGED_SCORE)}),
        "mod-profile-high": _profile("mod-profile-high", {"openai": _provider(mod)}, severity_threshold=0.99),
        "mod-provider-wins": _profile("mod-provider-wins", {"openai": _provider(mod, severity_threshold=0.5)},
                                      severity_threshold=0.99),
        "mod-low": _profile("mod-low", {"openai": _provider(mod, severity_threshold=CLEAN_SCORE)}),
        "mod-out": _profile("mod-out", {"openai": _provider(mod)}, guard_types=["output"]),
        "hang-best": _profile("hang-best", {"openai": _provider(hang, {HANG_MODEL: []}, **failing)},
                              failure_mode="best_effort"),
        "hang-fast": _profile("hang-fast", {"openai": _provider(hang, {HANG_MODEL: []}, **failing)},
                              failure_mode="fail_fast"),
        "refused-best": _profile("refused-best", {"openai": _provider(refused_base_url(), **failing)},
                                 failure_mode="best_effort"),
        "refused-fast": _profile("refused-fast", {"openai": _provider(refused_base_url(), **failing)},
                                 failure_mode="fail_fast"),
        "error-best": _profile("error-best", {"openai": _provider(mod, {ERROR_MODEL: []})},
                               failure_mode="best_effort"),
        "error-fast": _profile("error-fast", {"openai": _provider(mod, {ERROR_MODEL: []})},
                               failure_mode="fail_fast"),
        "garbage-fast": _profile("garbage-fast", {"openai": _provider(hang, {GARBAGE_MODEL: []})},
                                 failure_mode="fail_fast"),
        "parallel": _profile("parallel", {
            "hate": _provider(mod, {PROBE_MODEL: ["hate"]}),
            "any": _provider(mod, {SECOND_PROBE_MODEL: []})}, execution_mode="parallel"),
        "parallel-one-hangs": _profile("parallel-one-hangs", {
            "hangs": _provider(hang, {HANG_MODEL: []}, **failing),
            "any": _provider(mod)}, execution_mode="parallel", failure_mode="best_effort"),
        "sequential": _profile("sequential", {
            "hate": _provider(mod, {PROBE_MODEL: ["hate"]}),
            "any": _provider(mod, {SECOND_PROBE_MODEL: []})}, execution_mode="sequential"),
    }
    chat = openai_provider("ok", upstream.url)
    models = [guarded_model(profile_id, chat, profile_id) for profile_id in profiles if profile_id != "mod-out"]
    models.append(guarded_model("echo-out", dummy_provider("echo"), "mod-out"))
    return "".join(profiles.values()) + "".join(models)


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, raw_upstream):
    raw_upstream.on(HANG_MODEL, lambda handler: handler.wait(HANG_LIMIT_S))
    raw_upstream.on(GARBAGE_MODEL, response(200, b"this is not json"))
    return module_gateway_factory(_config(upstream, raw_upstream), env={KEY_ENV: KEY})


def _chat(model: str, text: str, **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _moderations(upstream) -> list:
    return [r for r in upstream.requests if r.route.endswith("/moderations")]


def _chats(upstream) -> list:
    return [r for r in upstream.requests if r.route.endswith("/chat/completions")]


def _answered_content(resp) -> str:
    assert resp.status == 200, resp
    return resp.json()["choices"][0]["message"]["content"]


def _timed(gw, body: dict):
    started = time.monotonic()
    resp = gw.request("POST", "/v1/chat/completions", body)
    return resp, time.monotonic() - started


# -- input ------------------------------------------------------------------------------------------


class TestInputModeration:
    def test_a_flagged_input_is_a_400_content_filter_and_the_chat_upstream_never_gets_it(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod", FLAGGED_TEXT))
        assert resp.status == 400, resp
        assert resp.json() == BLOCKED_INPUT
        assert _chats(upstream) == []
        assert len(_moderations(upstream)) == 1

    def test_a_clean_input_reaches_the_chat_upstream_unchanged(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod", CLEAN_TEXT))
        assert _answered_content(resp) == CONTENT
        [received] = _chats(upstream)
        assert received.body["messages"] == [{"role": "user", "content": CLEAN_TEXT}]

    def test_the_moderation_upstream_gets_the_probe_model_and_every_input_text(self, gw, upstream):
        body = _chat("mod", CLEAN_TEXT)
        body["messages"].insert(0, {"role": "system", "content": "be brief"})
        assert gw.request("POST", "/v1/chat/completions", body).status == 200
        [received] = _moderations(upstream)
        assert received.body["model"] == PROBE_MODEL
        assert received.body["input"] == ["be brief", CLEAN_TEXT]

    def test_the_moderation_is_asked_before_the_chat_upstream(self, gw, upstream):
        assert gw.request("POST", "/v1/chat/completions", _chat("mod", CLEAN_TEXT)).status == 200
        [moderation], [chat] = _moderations(upstream), _chats(upstream)
        assert moderation.received_at <= chat.received_at

    def test_no_authorization_goes_to_the_moderation_upstream_with_key_location_none(self, gw, upstream):
        assert gw.request("POST", "/v1/chat/completions", _chat("mod", CLEAN_TEXT)).status == 200
        [received] = _moderations(upstream)
        assert "authorization" not in received.headers

    def test_the_key_from_api_key_location_is_a_bearer_token(self, gw, upstream):
        assert gw.request("POST", "/v1/chat/completions", _chat("mod-keyed", CLEAN_TEXT)).status == 200
        [received] = _moderations(upstream)
        assert received.headers["authorization"] == f"Bearer {KEY}"


class TestProbeCategories:
    def test_a_profile_acting_only_on_hate_lets_a_violent_text_through(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod-hate", FLAGGED_TEXT))
        assert _answered_content(resp) == CONTENT
        assert _chats(upstream)[0].body["messages"][0]["content"] == FLAGGED_TEXT
        assert _moderations(upstream)[0].body["model"] == PROBE_MODEL

    def test_a_profile_listing_violence_blocks_it(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod-violence", FLAGGED_TEXT))
        assert resp.status == 400, resp
        assert resp.json() == BLOCKED_INPUT
        assert _chats(upstream) == []


class TestSeverityThreshold:
    def test_a_provider_threshold_above_the_score_lets_the_text_through(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod-high", FLAGGED_TEXT))
        assert _answered_content(resp) == CONTENT
        assert len(_chats(upstream)) == 1

    def test_a_score_equal_to_the_threshold_blocks(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod-at-score", FLAGGED_TEXT))
        assert resp.status == 400, resp
        assert _chats(upstream) == []

    def test_the_profile_threshold_applies_when_the_provider_sets_none(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod-profile-high", FLAGGED_TEXT))
        assert _answered_content(resp) == CONTENT

    def test_the_provider_threshold_wins_over_the_profile_threshold(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod-provider-wins", FLAGGED_TEXT))
        assert resp.status == 400, resp
        assert _chats(upstream) == []

    def test_a_threshold_at_the_clean_score_flags_even_a_clean_text(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("mod-low", CLEAN_TEXT))
        assert resp.status == 400, resp
        assert _chats(upstream) == []


# -- whole answers ----------------------------------------------------------------------------------


class TestOutputModeration:
    def test_a_flagged_answer_is_200_with_empty_content_and_finish_reason_content_filter(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("echo-out", FLAGGED_TEXT))
        assert resp.status == 200, resp
        choice = resp.json()["choices"][0]
        assert choice["message"]["content"] == ""
        assert choice["finish_reason"] == "content_filter"
        assert FLAGGED_WORD not in resp.body.decode()

    def test_the_output_scan_sends_the_answer_text_not_the_request(self, gw, upstream):
        gw.request("POST", "/v1/chat/completions", _chat("echo-out", FLAGGED_TEXT))
        # An output-only profile: one moderation call, on the echoed answer.
        [received] = _moderations(upstream)
        assert received.body["input"] == [FLAGGED_TEXT]

    def test_a_flagged_stream_ends_with_content_filter_and_none_of_its_text(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("echo-out", FLAGGED_TEXT, stream=True))
        assert resp.status == 200, resp
        data = resp.sse_data()
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
        assert FLAGGED_WORD not in resp.body.decode()

    def test_a_clean_answer_is_delivered_unchanged(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("echo-out", CLEAN_TEXT))
        assert _answered_content(resp) == CLEAN_TEXT
        assert resp.json()["choices"][0]["finish_reason"] == "stop"


# -- several providers ------------------------------------------------------------------------------


class TestSeveralProviders:
    def test_parallel_blocks_when_one_provider_flags(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("parallel", FLAGGED_TEXT))
        assert resp.status == 400, resp
        assert resp.json() == BLOCKED_INPUT
        assert _chats(upstream) == []
        assert sorted(r.body["model"] for r in _moderations(upstream)) == sorted([PROBE_MODEL, SECOND_PROBE_MODEL])

    def test_parallel_passes_when_neither_flags(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("parallel", CLEAN_TEXT))
        assert _answered_content(resp) == CONTENT
        assert {r.body["model"] for r in _moderations(upstream)} == {PROBE_MODEL, SECOND_PROBE_MODEL}

    def test_parallel_blocks_on_a_flag_while_the_other_provider_hangs(self, gw, upstream):
        before = gw.metric_total(FAILURES, profile="parallel-one-hangs")
        resp, elapsed = _timed(gw, _chat("parallel-one-hangs", FLAGGED_TEXT))
        assert resp.status == 400, resp
        assert resp.json() == BLOCKED_INPUT
        assert elapsed < NO_HANG_S
        assert _chats(upstream) == []
        assert gw.metric_total(FAILURES, profile="parallel-one-hangs") == before + 1

    def test_sequential_blocks_when_the_second_provider_flags(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", _chat("sequential", FLAGGED_TEXT))
        assert resp.status == 400, resp
        assert _chats(upstream) == []


# -- failure modes ----------------------------------------------------------------------------------

#: Each fault of the moderation upstream -> (best_effort profile, fail_fast profile).
_FAILING = {"hang": ("hang-best", "hang-fast"), "refused": ("refused-best", "refused-fast"),
            "http-503": ("error-best", "error-fast")}


class TestFailureModes:
    @pytest.mark.parametrize("fault", list(_FAILING))
    def test_best_effort_lets_the_text_through_and_counts_a_failure(self, gw, upstream, fault):
        profile = _FAILING[fault][0]
        before = gw.metric_total(FAILURES, profile=profile)
        resp, elapsed = _timed(gw, _chat(profile, CLEAN_TEXT))
        assert _answered_content(resp) == CONTENT
        assert elapsed < NO_HANG_S
        assert _chats(upstream)[0].body["messages"][0]["content"] == CLEAN_TEXT
        assert gw.metric_total(FAILURES, profile=profile) == before + 1

    @pytest.mark.parametrize("fault", list(_FAILING))
    def test_best_effort_lets_even_a_flaggable_text_through(self, gw, upstream, fault):
        resp, _ = _timed(gw, _chat(_FAILING[fault][0], FLAGGED_TEXT))
        assert _answered_content(resp) == CONTENT

    @pytest.mark.parametrize("fault", list(_FAILING))
    def test_fail_fast_is_a_502_guardrail_failure_and_the_chat_upstream_never_gets_it(self, gw, upstream, fault):
        profile = _FAILING[fault][1]
        resp, elapsed = _timed(gw, _chat(profile, CLEAN_TEXT))
        assert resp.status == 502, resp
        error = resp.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "guardrail_failure"), error
        assert isinstance(error["message"], str) and error["message"]
        assert elapsed < NO_HANG_S
        assert _chats(upstream) == []

    @pytest.mark.parametrize("profile", ["hang-best", "hang-fast"])
    def test_a_hanging_moderation_upstream_is_tried_three_times(self, gw, raw_upstream, profile):
        _timed(gw, _chat(profile, CLEAN_TEXT))
        assert raw_upstream.wait_for(lambda: len(raw_upstream.requests_for(HANG_MODEL)) >= ATTEMPTS,
                                     RECORD_WAIT_S)
        # Every attempt was given up on: the gateway left each connection instead of waiting on.
        assert raw_upstream.wait_for(
            lambda: all(r.aborted_at is not None for r in raw_upstream.requests_for(HANG_MODEL)),
            RECORD_WAIT_S + POLL_S), raw_upstream.requests_for(HANG_MODEL)
        assert len(raw_upstream.requests_for(HANG_MODEL)) == ATTEMPTS

    def test_a_5xx_moderation_answer_is_tried_three_times(self, gw, upstream):
        assert gw.request("POST", "/v1/chat/completions", _chat("error-best", CLEAN_TEXT)).status == 200
        assert [r.body["model"] for r in _moderations(upstream)] == [ERROR_MODEL] * ATTEMPTS

    def test_an_unreadable_moderation_answer_is_a_guardrail_failure(self, gw):
        resp, elapsed = _timed(gw, _chat("garbage-fast", CLEAN_TEXT))
        assert resp.status == 502, resp
        assert resp.json()["error"]["code"] == "guardrail_failure"
        assert elapsed < NO_HANG_S
