"""Whether auth is on and where keys come from: on with no key source refuses to start; ``[api_keys]`` in
the TOML serves without Redis; off with Redis serves config and Redis models by name, credentials as
written."""

from __future__ import annotations

import json
import uuid

import openai
import pytest
from budapp import grant, hash_key, new_raw_key, openai_section, store_location
from configs import model_toml, openai_provider, toml_value
from upstream import CONTENT

from .polling import wait_loaded

MESSAGES = [{"role": "user", "content": "hi"}]
TOML_KEY = new_raw_key()
UNKNOWN_KEY = new_raw_key()
REDIS_EP = str(uuid.uuid4())
#: Written to Redis as it is: the gateway without an RSA key uses it as it is.
PLAIN_CREDENTIAL = f"sk-plain-{uuid.uuid4().hex}"
AUTH_ON = "[gateway]\n[gateway.authentication]\nenabled = true\n"


def _api_keys_toml(raw_key: str, grants: dict[str, dict[str, str]]) -> str:
    """``[api_keys."<sha256 hex>"."<model>"]`` tables, as the contract spells them."""
    return "".join(f'\n[api_keys.{json.dumps(hash_key(raw_key))}.{json.dumps(model)}]\n'
                   + "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items())
                   for model, fields in grants.items())


def _chat(gw, key: str | None, model: str):
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES}, headers=headers)


class TestAuthWithoutAKeySource:
    def test_refuses_to_start_with_a_clear_message(self, gateway_run, store_env):
        result = gateway_run(AUTH_ON, store_env())
        assert result.returncode == 1, result.stdout + result.stderr
        assert "TENSORZERO_REDIS_URL" in result.stderr and "api_keys" in result.stderr, result.stderr


@pytest.fixture(scope="module")
def toml_gw(module_gateway_factory, upstream, store_env):
    """No Redis: one config model, and a key granted it under another name in ``[api_keys]``."""
    models = model_toml("local-chat", {"p": openai_provider("ok-toml", upstream.url)})
    models += _api_keys_toml(TOML_KEY, {"gpt": grant("local-chat")})
    return module_gateway_factory(models, env=store_env())


@pytest.fixture(scope="module")
def open_gw(module_gateway_factory, redis_server, budapp_factory, upstream, store_env):
    """Auth off, with Redis and no RSA key: a config model, and a Redis model with a plaintext credential."""
    writer = budapp_factory(redis_server, 0, None)
    section = openai_section(upstream.url, "ok-from-redis", api_key_location=store_location(REDIS_EP))
    writer.put_model(REDIS_EP, {"p": section}, credential=PLAIN_CREDENTIAL)
    models = model_toml("config-chat", {"p": openai_provider("ok-from-config", upstream.url)})
    gateway = module_gateway_factory(models, settings={"authentication": {"enabled": False}},
                                     env=store_env(redis_server.url(0)))
    wait_loaded(gateway)
    return gateway


class TestApiKeysInToml:
    @pytest.fixture
    def gw(self, toml_gw):
        return toml_gw

    def test_key_from_the_toml_is_served(self, gw, sdk):
        resp = sdk(gw, TOML_KEY).chat.completions.create(model="gpt", messages=MESSAGES)
        assert resp.choices[0].message.content == CONTENT

    def test_grant_resolves_to_the_config_model_of_its_endpoint_id(self, gw, sdk, upstream):
        sdk(gw, TOML_KEY).chat.completions.create(model="gpt", messages=MESSAGES)
        assert [r.model for r in upstream.requests] == ["ok-toml"]

    def test_unknown_key_is_401(self, gw, sdk):
        with pytest.raises(openai.AuthenticationError):
            sdk(gw, UNKNOWN_KEY).chat.completions.create(model="gpt", messages=MESSAGES)

    def test_missing_header_is_401(self, gw):
        assert _chat(gw, None, "gpt").status == 401

    def test_config_model_the_key_does_not_list_is_404(self, gw):
        assert _chat(gw, TOML_KEY, "local-chat").status == 404

    def test_models_lists_the_keys_models(self, gw, sdk):
        assert [m.id for m in sdk(gw, TOML_KEY).models.list()] == ["gpt"]

    def test_health_says_nothing_of_redis(self, gw):
        assert gw.request("GET", "/health").json() == {"gateway": "ok"}


class TestAuthDisabledWithRedis:
    @pytest.fixture
    def gw(self, open_gw):
        return open_gw

    def test_config_model_is_served_without_a_key(self, gw, upstream):
        assert _chat(gw, None, "config-chat").status == 200
        assert [r.model for r in upstream.requests] == ["ok-from-config"]

    def test_redis_model_is_served_by_its_endpoint_id(self, gw, upstream):
        assert _chat(gw, None, REDIS_EP).status == 200
        assert [r.model for r in upstream.requests] == ["ok-from-redis"]

    def test_credential_is_used_as_written_without_an_rsa_key(self, gw, upstream):
        _chat(gw, None, REDIS_EP)
        [rec] = upstream.requests
        assert rec.headers.get("authorization") == f"Bearer {PLAIN_CREDENTIAL}"

    def test_any_client_key_is_ignored(self, gw):
        assert _chat(gw, UNKNOWN_KEY, "config-chat").status == 200

    def test_models_lists_config_and_redis_models(self, gw):
        ids = {m["id"] for m in gw.request("GET", "/v1/models").json()["data"]}
        assert ids == {"config-chat", REDIS_EP}
