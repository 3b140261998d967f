"""Guardrail profiles from budapp's ``guardrail_table:{id}``: a Redis model naming one is guarded by
it, its RSA-encrypted ``api_key`` reaches the moderation provider decrypted, a change applies within
a second, and a model naming a profile that is not loaded fails closed (503)."""

from __future__ import annotations

import json

import pytest
from budapp import openai_section
from configs import dummy_provider

from .polling import CHANGE_VISIBLE_S, wait_loaded, wait_until

MESSAGES = [{"role": "user", "content": "this is forbidden"}]
CLEAN = [{"role": "user", "content": "hello there"}]
MODERATION_KEY = "sk-moderation-secret-123"


@pytest.fixture(scope="module")
def redis_client(redis_server):
    return redis_server.client(7)


@pytest.fixture(scope="module")
def writer(redis_server, budapp_factory, key_pair):
    return budapp_factory(redis_server, 7, key_pair)


@pytest.fixture(scope="module")
def gw(module_gateway_factory, redis_server, key_pair, store_env, upstream):
    env = store_env(redis_server.url(7), private_key=key_pair.pkcs1_pem())
    gateway = module_gateway_factory("", settings={"workers": 1, "authentication": {"enabled": False}}, env=env)
    wait_loaded(gateway)
    return gateway


def _profile(writer, profile_id: str, providers: dict, api_key: str | None = None, **fields) -> None:
    entry = {"name": profile_id, "guard_types": ["input"], "execution_mode": "parallel",
             "failure_mode": "fail_fast", "providers": providers, **fields}
    if api_key is not None:
        entry["api_key"] = writer.encrypt(api_key)
    writer.client.set(f"guardrail_table:{profile_id}", json.dumps({profile_id: entry}))


def _chat(gw, model: str, messages=MESSAGES):
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": messages})


def test_a_redis_model_is_guarded_by_its_redis_profile(gw, writer):
    _profile(writer, "deny", {"local": {"type": "local", "deny_words": ["forbidden"], "action": "block"}})
    writer.put_model("ep-deny", {"d": dummy_provider("echo")}, guardrail_profile="deny")
    assert wait_until(lambda: _chat(gw, "ep-deny").status == 400, CHANGE_VISIBLE_S * 3)
    assert _chat(gw, "ep-deny").json()["error"]["code"] == "content_filter"
    assert _chat(gw, "ep-deny", CLEAN).status == 200


def test_a_profile_change_applies_and_a_missing_profile_fails_closed(gw, writer, redis_client):
    _profile(writer, "live", {"local": {"type": "local", "deny_words": ["forbidden"], "action": "block"}})
    writer.put_model("ep-live", {"d": dummy_provider("echo")}, guardrail_profile="live")
    assert wait_until(lambda: _chat(gw, "ep-live").status == 400, CHANGE_VISIBLE_S * 3)
    _profile(writer, "live", {"local": {"type": "local", "deny_words": ["other"], "action": "block"}})
    assert wait_until(lambda: _chat(gw, "ep-live").status == 200, CHANGE_VISIBLE_S)
    redis_client.delete("guardrail_table:live")
    assert wait_until(lambda: _chat(gw, "ep-live").status == 503, CHANGE_VISIBLE_S)
    error = _chat(gw, "ep-live").json()["error"]
    assert error["code"] == "service_unavailable" and "guardrail profile live" in error["message"]


def test_the_profiles_encrypted_key_reaches_the_moderation_provider(gw, writer, upstream):
    provider = {"type": "openai", "api_base": upstream.url, "api_key_location": "dynamic::store_mod",
                "probe_config": {"omni-moderation-latest": ["violence"]}}
    _profile(writer, "mod", {"moderation": provider}, api_key=MODERATION_KEY)
    writer.put_model("ep-mod", {"p": openai_section(upstream.url, "ok", api_key_location="none")},
                     guardrail_profile="mod")
    assert wait_until(lambda: _chat(gw, "ep-mod").status == 400, CHANGE_VISIBLE_S * 3)
    moderation = [r for r in upstream.requests if r.path.endswith("/moderations")]
    assert moderation and moderation[-1].headers.get("authorization") == f"Bearer {MODERATION_KEY}"
    assert MODERATION_KEY not in gw.log()
