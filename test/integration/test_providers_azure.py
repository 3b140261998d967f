"""The ``azure`` provider against a loopback Azure OpenAI resource that checks deployment path, api-version
and api-key as Azure does: chat (plain and streamed), embeddings, a transcription, an image generation."""

from __future__ import annotations

import openai
import pytest
from configs import azure_provider, model_toml
from media import wav_bytes
from upstream import CONTENT, TRANSCRIPT, embedding_vector
from upstream_azure import API_KEY

MESSAGES = [{"role": "user", "content": "hi"}]
DEFAULT_API_VERSION = "2024-10-21"
PREVIEW_API_VERSION = "2025-04-01-preview"
WRONG_KEY_ENV = "BUDGATEWAY_TEST_WRONG_AZURE_KEY"
WAV = wav_bytes()


def _models(endpoint: str) -> str:
    return "".join([
        model_toml("az-chat", {"azure": azure_provider("gpt-4o-deploy", endpoint)}),
        model_toml("az-embed", {"azure": azure_provider("embed-deploy", endpoint)}, endpoints=["embedding"]),
        model_toml("az-whisper", {"azure": azure_provider("whisper-deploy", endpoint)},
                   endpoints=["audio_transcription"]),
        model_toml("az-dalle", {"azure": azure_provider("dalle-deploy", endpoint)},
                   endpoints=["image_generation"]),
        model_toml("az-preview", {"azure": azure_provider("gpt-4o-deploy", endpoint,
                                                          api_version=PREVIEW_API_VERSION)}),
        model_toml("az-old-version", {"azure": azure_provider("gpt-4o-deploy", endpoint,
                                                              api_version="2022-12-01")}),
        model_toml("az-wrong-key", {"azure": azure_provider("gpt-4o-deploy", endpoint,
                                                            api_key_location=f"env::{WRONG_KEY_ENV}")}),
        model_toml("az-no-deployment", {"azure": azure_provider("missing-deploy", endpoint)}),
    ])


@pytest.fixture(scope="module")
def gw(module_gateway_factory, azure_upstream, upstream_client):
    # The key sits in the type's default variable: no api_key_location above names it.
    env = {"AZURE_OPENAI_API_KEY": API_KEY, WRONG_KEY_ENV: "not-the-key"}
    return module_gateway_factory(_models(azure_upstream.url), env=env,
                                  settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


def _only(azure_upstream):
    [rec] = azure_upstream.requests
    return rec


class TestAzureChat:
    def test_plain_answer(self, client):
        resp = client.chat.completions.create(model="az-chat", messages=MESSAGES)
        assert resp.choices[0].message.content == CONTENT
        assert resp.model == "az-chat"

    def test_request_goes_to_the_deployment_path_with_version_and_key(self, client, azure_upstream):
        client.chat.completions.create(model="az-chat", messages=MESSAGES)
        rec = _only(azure_upstream)
        assert rec.route == "/openai/deployments/gpt-4o-deploy/chat/completions"
        assert rec.query == {"api-version": [DEFAULT_API_VERSION]}
        assert rec.headers["api-key"] == API_KEY
        assert "authorization" not in rec.headers
        assert rec.body == {"model": "ok", "messages": MESSAGES}

    def test_stream(self, client, azure_upstream):
        chunks = list(client.chat.completions.create(model="az-chat", messages=MESSAGES, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CONTENT
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert _only(azure_upstream).route == "/openai/deployments/gpt-4o-deploy/chat/completions"

    def test_configured_api_version_is_sent(self, client, azure_upstream):
        client.chat.completions.create(model="az-preview", messages=MESSAGES)
        assert _only(azure_upstream).query == {"api-version": [PREVIEW_API_VERSION]}


class TestAzureEndpoints:
    def test_embeddings(self, client, azure_upstream):
        resp = client.embeddings.create(model="az-embed", input="hello")
        assert resp.data[0].embedding == embedding_vector(0)
        rec = _only(azure_upstream)
        assert (rec.route, rec.query["api-version"]) == ("/openai/deployments/embed-deploy/embeddings",
                                                         [DEFAULT_API_VERSION])

    def test_transcription(self, client, azure_upstream):
        resp = client.audio.transcriptions.create(model="az-whisper", file=("tone.wav", WAV, "audio/wav"))
        assert resp.text == TRANSCRIPT
        rec = _only(azure_upstream)
        assert rec.route == "/openai/deployments/whisper-deploy/audio/transcriptions"
        assert rec.headers["api-key"] == API_KEY
        assert rec.form.files[0].data == WAV

    def test_image_generation(self, client, azure_upstream):
        resp = client.images.generate(model="az-dalle", prompt="a red square")
        assert resp.data[0].url == "https://images.upstream.test/0.png"
        assert _only(azure_upstream).route == "/openai/deployments/dalle-deploy/images/generations"


class TestAzureErrors:
    def test_wrong_key_is_401_with_azures_message(self, client):
        with pytest.raises(openai.AuthenticationError) as exc_info:
            client.chat.completions.create(model="az-wrong-key", messages=MESSAGES)
        assert exc_info.value.body["message"].startswith("Access denied due to invalid subscription key")

    def test_unknown_deployment_is_404_deployment_not_found(self, client):
        with pytest.raises(openai.NotFoundError) as exc_info:
            client.chat.completions.create(model="az-no-deployment", messages=MESSAGES)
        assert exc_info.value.code == "DeploymentNotFound"
        assert exc_info.value.body["message"].startswith("The API deployment for this resource does not")

    def test_unserved_api_version_is_404_resource_not_found(self, client):
        with pytest.raises(openai.NotFoundError) as exc_info:
            client.chat.completions.create(model="az-old-version", messages=MESSAGES)
        assert exc_info.value.body["message"] == "Resource not found"


class TestAzureConfig:
    @pytest.mark.parametrize("capability", ["moderation", "responses"])
    def test_capability_azure_does_not_serve_is_rejected(self, gateway_cli, capability):
        models = model_toml("m", {"azure": azure_provider("d", "http://127.0.0.1:9")}, endpoints=[capability])
        result = gateway_cli(models, "--check-config")
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"does not serve {capability}" in result.stdout + result.stderr

    def test_deployment_id_is_required(self, gateway_cli):
        table = azure_provider("d", "http://127.0.0.1:9")
        del table["deployment_id"]
        result = gateway_cli(model_toml("m", {"azure": table}), "--check-config")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "deployment_id" in result.stdout + result.stderr
