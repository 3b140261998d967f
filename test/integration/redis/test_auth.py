"""Authentication against keys, models and credentials budapp wrote to a real Redis before the gateway started
(its first full load reads them), through the official SDK and raw HTTP; the upstream records what it got."""

from __future__ import annotations

import base64
import json
import uuid

import openai
import pytest
from budapp import (
    BASE64,
    CLIENT_KEY_PREFIX,
    KEY_PREFIX,
    MODEL_PREFIX,
    PKCS1V15,
    grant,
    hash_key,
    new_raw_key,
    openai_section,
    wrong_key_ciphertext,
)
from upstream import CONTENT

from .polling import wait_loaded

MESSAGES = [{"role": "user", "content": "hi"}]
#: The upstream echoes an edited image's bytes back; it does not decode them.
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
#: How much of a secret is enough to recognise it in a log line or a body.
SECRET_FRAGMENT_CHARS = 16

CHAT_EP, LEGACY_EP, IMAGE_EP, PUBLISHED_EP, BROKEN_EP, GHOST_EP, NOT_JSON_EP = (
    str(uuid.uuid4()) for _ in range(7))
CHAT_CREDENTIAL, LEGACY_CREDENTIAL, IMAGE_CREDENTIAL, PUBLISHED_CREDENTIAL, BROKEN_CREDENTIAL = (
    f"sk-{name}-{uuid.uuid4().hex}" for name in ("chat", "legacy", "image", "published", "broken"))
#: A key with chat (OAEP, hex), legacy (PKCS#1 v1.5, base64) and image-edit models, and a prompt.
KEY = new_raw_key()
#: A ``bud_client`` key: its own chat model, and the published models.
CLIENT_KEY = new_raw_key(CLIENT_KEY_PREFIX + "_")
#: A key whose models include one with an undecryptable credential and one with no model table entry.
BROKEN_KEY = new_raw_key()
#: A key with one grant that lacks its endpoint_id.
PARTLY_BAD_KEY = new_raw_key()
#: A key whose value is not JSON.
NOT_JSON_KEY = new_raw_key()
#: Never written.
UNKNOWN_KEY = new_raw_key()
KEY_MODELS = {"gpt-test", "legacy-test", "edit-test"}
PROMPT = "prompt:greeting"

INFERENCE_PATHS = ["/chat/completions", "/completions", "/embeddings", "/moderations", "/images/generations",
                   "/audio/speech", "/responses", "/audio/transcriptions", "/audio/translations",
                   "/images/edits", "/images/variations"]
GUARDED = ([("POST", prefix + path) for prefix in ("/v1", "/openai/v1") for path in INFERENCE_PATHS]
           + [("POST", "/v1/messages"), ("GET", "/v1/models"), ("GET", "/v1/models/gpt-test")])
OPEN_PATHS = ["/health", "/status", "/metrics"]


@pytest.fixture(scope="module")
def writer(redis_server, budapp_factory, key_pair):
    return budapp_factory(redis_server, 0, key_pair)


@pytest.fixture(scope="module")
def gw(module_gateway_factory, redis_server, writer, other_key_pair, key_pair, upstream, store_env):
    api = upstream.url
    writer.put_model(CHAT_EP, {"p": openai_section(api, "ok-chat")}, credential=CHAT_CREDENTIAL)
    writer.put_model(LEGACY_EP, {"p": openai_section(api, "ok-legacy")}, credential=LEGACY_CREDENTIAL,
                     padding=PKCS1V15, encoding=BASE64)
    writer.put_model(IMAGE_EP, {"p": openai_section(api, "ok-image")}, credential=IMAGE_CREDENTIAL,
                     endpoints=["image_edit"])
    writer.put_model(PUBLISHED_EP, {"p": openai_section(api, "ok-published")},
                     credential=PUBLISHED_CREDENTIAL)
    writer.put_model(BROKEN_EP, {"p": openai_section(api, "ok-broken")},
                     api_key=wrong_key_ciphertext(BROKEN_CREDENTIAL, other_key_pair, key_pair))
    writer.put_raw(MODEL_PREFIX + NOT_JSON_EP, "{not json")
    prompt = grant(CHAT_EP, prompt_id="prompt-1", prompt_version_id="prompt-1-v2", version=2)
    writer.put_key(KEY, {"gpt-test": grant(CHAT_EP), "legacy-test": grant(LEGACY_EP),
                         "edit-test": grant(IMAGE_EP), PROMPT: prompt})
    writer.put_key(CLIENT_KEY, {"gpt-test": grant(CHAT_EP)})
    writer.put_key(BROKEN_KEY, {"broken-test": grant(BROKEN_EP), "ghost-test": grant(GHOST_EP),
                                "gpt-test": grant(CHAT_EP)})
    writer.put_key(PARTLY_BAD_KEY, {"gpt-test": grant(CHAT_EP),
                                    "no-endpoint": {"model_id": "m-1", "project_id": "p-1"}})
    writer.put_raw(KEY_PREFIX + hash_key(NOT_JSON_KEY), "{not json")
    writer.secrets += [NOT_JSON_KEY, UNKNOWN_KEY, BROKEN_CREDENTIAL]
    writer.publish({"published-test": grant(PUBLISHED_EP)})
    # debug: the access log and every DEBUG line are part of what must hold no secret.
    gateway = module_gateway_factory("", settings={"debug": True},
                                     env=store_env(redis_server.url(0), private_key=key_pair.pkcs1_pem()))
    wait_loaded(gateway)
    return gateway


def _chat(gw, key: str | None, model: str):
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES}, headers=headers)


def _error(resp) -> dict:
    """The error of an answer: OpenAI's shape, or Anthropic's ({"type": "error", ...}) on /v1/messages."""
    body = resp.json()
    error = body["error"]
    if body.get("type") == "error":
        assert set(error) == {"message", "type"}, error
    else:
        assert set(error) == {"message", "type", "param", "code"}, error
    return error


class TestAuthenticatedRequests:
    def test_listed_model_gets_the_upstream_answer(self, gw, sdk):
        resp = sdk(gw, KEY).chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert resp.choices[0].message.content == CONTENT

    def test_upstream_gets_the_provider_model_name_of_the_keys_endpoint(self, gw, sdk, upstream):
        sdk(gw, KEY).chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert [r.model for r in upstream.requests] == ["ok-chat"]

    def test_upstream_gets_the_decrypted_credential_as_its_bearer_token(self, gw, sdk, upstream):
        sdk(gw, KEY).chat.completions.create(model="gpt-test", messages=MESSAGES)
        [rec] = upstream.requests
        assert rec.headers.get("authorization") == f"Bearer {CHAT_CREDENTIAL}"

    def test_upstream_never_gets_the_clients_key(self, gw, sdk, upstream):
        sdk(gw, KEY).chat.completions.create(model="gpt-test", messages=MESSAGES)
        [rec] = upstream.requests
        assert KEY not in json.dumps(rec.headers) + json.dumps(rec.body) + rec.path

    def test_pkcs1v15_base64_credential_is_decrypted(self, gw, sdk, upstream):
        sdk(gw, KEY).chat.completions.create(model="legacy-test", messages=MESSAGES)
        [rec] = upstream.requests
        assert (rec.model, rec.headers.get("authorization")) == ("ok-legacy", f"Bearer {LEGACY_CREDENTIAL}")

    def test_key_without_the_bearer_prefix_is_accepted(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "gpt-test", "messages": MESSAGES},
                          headers={"Authorization": KEY})
        assert resp.status == 200, resp

    def test_openai_prefixed_route_takes_the_key_too(self, gw):
        resp = gw.request("POST", "/openai/v1/chat/completions", {"model": "gpt-test", "messages": MESSAGES},
                          headers={"Authorization": f"Bearer {KEY}"})
        assert resp.status == 200, resp


class TestMultipartRoutes:
    def test_model_comes_from_the_form_field(self, gw, sdk, upstream):
        resp = sdk(gw, KEY).images.edit(image=("a.png", IMAGE, "image/png"), prompt="hat", model="edit-test")
        assert base64.b64decode(resp.data[0].b64_json) == IMAGE
        [rec] = upstream.requests
        assert rec.form.get("model") == "ok-image"
        assert rec.headers.get("authorization") == f"Bearer {IMAGE_CREDENTIAL}"

    def test_form_model_the_key_does_not_list_is_404(self, gw, sdk, upstream):
        with pytest.raises(openai.NotFoundError) as exc:
            sdk(gw, KEY).images.edit(image=("a.png", IMAGE, "image/png"), prompt="hat", model="dall-e-2")
        assert exc.value.body["message"] == "Model not found: dall-e-2"
        assert upstream.requests == []


class TestRejections:
    def test_missing_header_is_401(self, gw, upstream):
        resp = _chat(gw, None, "gpt-test")
        assert (resp.status, _error(resp)["message"]) == (401, "Missing authorization header")
        assert upstream.requests == []

    def test_unknown_key_is_401(self, gw, sdk, upstream):
        with pytest.raises(openai.AuthenticationError) as exc:
            sdk(gw, UNKNOWN_KEY).chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert exc.value.body["message"] == "Invalid API key"
        assert upstream.requests == []

    def test_unknown_key_is_not_echoed_in_the_error(self, gw):
        resp = _chat(gw, UNKNOWN_KEY, "gpt-test")
        assert resp.status == 401
        assert UNKNOWN_KEY[:SECRET_FRAGMENT_CHARS].encode() not in resp.body

    def test_the_stored_hash_is_not_a_key(self, gw):
        assert _chat(gw, hash_key(KEY), "gpt-test").status == 401

    def test_model_the_key_does_not_list_is_404(self, gw, sdk, upstream):
        with pytest.raises(openai.NotFoundError) as exc:
            sdk(gw, KEY).chat.completions.create(model="published-test", messages=MESSAGES)
        assert exc.value.body["message"] == "Model not found: published-test"
        assert upstream.requests == []

    def test_endpoint_id_is_not_a_model_name_for_a_key(self, gw, sdk):
        with pytest.raises(openai.NotFoundError) as exc:
            sdk(gw, KEY).chat.completions.create(model=CHAT_EP, messages=MESSAGES)
        assert exc.value.body["message"] == f"Model not found: {CHAT_EP}"

    def test_listed_model_without_a_model_table_entry_is_404_by_its_name(self, gw, sdk):
        with pytest.raises(openai.NotFoundError) as exc:
            sdk(gw, BROKEN_KEY).chat.completions.create(model="ghost-test", messages=MESSAGES)
        assert exc.value.body["message"] == "Model not found: ghost-test"

    def test_errors_are_openai_shaped(self, gw):
        for resp in (_chat(gw, None, "gpt-test"), _chat(gw, UNKNOWN_KEY, "gpt-test"), _chat(gw, KEY, "nope")):
            assert _error(resp)["type"] in ("authentication_error", "invalid_request_error"), resp

    @pytest.mark.parametrize(("method", "path"), GUARDED)
    def test_every_inference_route_and_models_need_a_key(self, gw, method, path):
        resp = gw.request(method, path, {"model": "gpt-test"} if method == "POST" else None)
        assert (resp.status, _error(resp)["message"]) == (401, "Missing authorization header"), path
        if path == "/v1/messages":
            assert resp.json()["type"] == "error", "Anthropic's SDK reads its own error shape"

    @pytest.mark.parametrize("path", OPEN_PATHS)
    def test_health_status_and_metrics_stay_open(self, gw, path):
        assert gw.request("GET", path).status == 200

    def test_health_reports_redis_ok(self, gw):
        assert gw.request("GET", "/health").json() == {"gateway": "ok", "redis": "ok"}


class TestModelsList:
    def test_lists_the_keys_models(self, gw, sdk):
        assert {m.id for m in sdk(gw, KEY).models.list()} == KEY_MODELS

    def test_leaves_out_prompt_grants(self, gw, sdk):
        assert not [m.id for m in sdk(gw, KEY).models.list() if m.id.startswith("prompt:")]

    def test_client_key_lists_its_own_and_the_published_models(self, gw, sdk):
        assert {m.id for m in sdk(gw, CLIENT_KEY).models.list()} == {"gpt-test", "published-test"}

    def test_one_listed_model(self, gw, sdk):
        assert sdk(gw, KEY).models.retrieve("gpt-test").id == "gpt-test"

    def test_one_model_the_key_does_not_list_is_404(self, gw, sdk):
        with pytest.raises(openai.NotFoundError):
            sdk(gw, KEY).models.retrieve(CHAT_EP)


class TestPublishedModels:
    def test_client_key_may_use_a_published_model(self, gw, sdk, upstream):
        resp = sdk(gw, CLIENT_KEY).chat.completions.create(model="published-test", messages=MESSAGES)
        assert resp.choices[0].message.content == CONTENT
        [rec] = upstream.requests
        assert rec.headers.get("authorization") == f"Bearer {PUBLISHED_CREDENTIAL}"

    def test_client_key_keeps_its_own_models(self, gw, sdk):
        assert sdk(gw, CLIENT_KEY).chat.completions.create(model="gpt-test", messages=MESSAGES).choices

    def test_other_keys_may_not_use_published_models(self, gw):
        assert _chat(gw, KEY, "published-test").status == 404


class TestEntriesThatDoNotParse:
    def test_key_keeps_its_good_grants(self, gw):
        assert _chat(gw, PARTLY_BAD_KEY, "gpt-test").status == 200

    def test_grant_without_an_endpoint_is_skipped(self, gw):
        assert _chat(gw, PARTLY_BAD_KEY, "no-endpoint").status == 404

    def test_key_whose_value_is_not_json_is_unknown(self, gw):
        assert _chat(gw, NOT_JSON_KEY, "gpt-test").status == 401

    def test_key_whose_value_is_not_json_cannot_list_models(self, gw):
        resp = gw.request("GET", "/v1/models", headers={"Authorization": f"Bearer {NOT_JSON_KEY}"})
        assert resp.status == 401, resp

    @pytest.mark.parametrize("where", [f"api_key:{hash_key(PARTLY_BAD_KEY)[:8]}",
                                       f"api_key:{hash_key(NOT_JSON_KEY)[:8]}", f"model_table:{NOT_JSON_EP}"])
    def test_each_skipped_entry_is_logged_as_a_warning(self, gw, where):
        assert [line for line in gw.log().splitlines() if "WARNING" in line and where in line], where


class TestUndecryptableCredential:
    def test_model_is_unavailable_with_503(self, gw, upstream):
        resp = _chat(gw, BROKEN_KEY, "broken-test")
        assert resp.status == 503, resp
        assert upstream.requests == []

    def test_message_says_why(self, gw):
        message = _error(_chat(gw, BROKEN_KEY, "broken-test"))["message"]
        assert "unavailable" in message and "credential" in message, message

    def test_message_names_the_model_the_client_asked_for(self, gw):
        message = _error(_chat(gw, BROKEN_KEY, "broken-test"))["message"]
        assert "broken-test" in message, message

    def test_error_body_holds_no_credential_or_ciphertext(self, gw, writer):
        body = _chat(gw, BROKEN_KEY, "broken-test").body.decode()
        assert [s for s in writer.secrets if s[:SECRET_FRAGMENT_CHARS] in body] == []

    def test_is_logged_as_a_warning(self, gw):
        assert [line for line in gw.log().splitlines() if "WARNING" in line and BROKEN_EP in line]

    def test_the_keys_other_models_still_serve(self, gw):
        assert _chat(gw, BROKEN_KEY, "gpt-test").status == 200


class TestNoSecretLeaks:
    """Run last in the module: by now every request above has been logged (at DEBUG) and counted."""

    @staticmethod
    def _leaked(text: str, secrets: list[str]) -> list[str]:
        return [s[:SECRET_FRAGMENT_CHARS] for s in secrets if s[:SECRET_FRAGMENT_CHARS] in text]

    def test_gateway_log_holds_no_key_credential_or_ciphertext(self, gw, writer):
        assert len(writer.secrets) > 10
        assert self._leaked(gw.log(), writer.secrets) == []

    def test_metrics_hold_no_secret(self, gw, writer):
        assert self._leaked(gw.request("GET", "/metrics").body.decode(), writer.secrets) == []
