"""The OpenAI-compatible hosted provider types (``providers.compatible``): chat, completions and
embeddings against the test upstream via ``api_base``, with each type's default key variable."""

from __future__ import annotations

import pytest
from configs import model_toml, openai_provider
from upstream import CONTENT, embedding_vector

MESSAGES = [{"role": "user", "content": "hi"}]
#: Each type: the key variable it reads by default, a key for it, and the capabilities it serves.
TYPES = {
    "together": ("TOGETHER_API_KEY", "together-test-key",
                 ["chat", "completions", "embedding", "image_generation"]),
    "anyscale": ("ANYSCALE_API_KEY", "anyscale-test-key", ["chat", "completions", "embedding"]),
    "deepseek": ("DEEPSEEK_API_KEY", "deepseek-test-key", ["chat"]),
    "fireworks": ("FIREWORKS_API_KEY", "fireworks-test-key", ["chat", "completions", "embedding"]),
    "groq": ("GROQ_API_KEY", "groq-test-key", ["chat", "audio_transcription", "audio_translation"]),
    "hyperbolic": ("HYPERBOLIC_API_KEY", "hyperbolic-test-key", ["chat", "completions"]),
    "mistral": ("MISTRAL_API_KEY", "mistral-test-key", ["chat", "embedding"]),
    "openrouter": ("OPENROUTER_API_KEY", "openrouter-test-key", ["chat", "completions"]),
    "xai": ("XAI_API_KEY", "xai-test-key", ["chat"]),
}


def _serving(capability: str) -> list[str]:
    return [name for name, (_, _, capabilities) in TYPES.items() if capability in capabilities]


def _models(api_base: str) -> str:
    # api_key_location=None: each type's default key location applies.
    return "".join(
        model_toml(name, {name: openai_provider(f"ok-{name}", api_base, type=name, api_key_location=None)},
                   endpoints=capabilities)
        for name, (_, _, capabilities) in TYPES.items())


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, upstream_client):
    env = {variable: key for variable, key, _ in TYPES.values()}
    return module_gateway_factory(_models(upstream.url), env=env,
                                  settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


@pytest.fixture(params=list(TYPES))
def provider_type(request):
    return request.param


class TestCompatibleProviders:
    def test_chat_goes_to_api_base_with_the_default_key(self, client, upstream, provider_type):
        resp = client.chat.completions.create(model=provider_type, messages=MESSAGES)
        assert resp.choices[0].message.content == CONTENT
        assert resp.model == provider_type
        [rec] = upstream.requests
        assert (rec.path, rec.model) == ("/v1/chat/completions", f"ok-{provider_type}")
        assert rec.headers["authorization"] == f"Bearer {TYPES[provider_type][1]}"

    def test_chat_stream(self, client, provider_type):
        chunks = client.chat.completions.create(model=provider_type, messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CONTENT

    @pytest.mark.parametrize("provider_type", _serving("embedding"))
    def test_embeddings(self, client, upstream, provider_type):
        resp = client.embeddings.create(model=provider_type, input=["a", "b"])
        assert [d.embedding for d in resp.data] == [embedding_vector(0), embedding_vector(1)]
        [rec] = upstream.requests
        assert (rec.path, rec.model) == ("/v1/embeddings", f"ok-{provider_type}")
        assert rec.headers["authorization"] == f"Bearer {TYPES[provider_type][1]}"

    @pytest.mark.parametrize("provider_type", _serving("completions"))
    def test_completions(self, client, provider_type):
        resp = client.completions.create(model=provider_type, prompt="Say hi")
        assert resp.choices[0].text == CONTENT

    def test_together_generates_images(self, client, upstream):
        resp = client.images.generate(model="together", prompt="a red square")
        assert resp.data[0].url == "https://images.upstream.test/0.png"
        assert upstream.requests[0].path == "/v1/images/generations"


class TestCompatibleConfig:
    @pytest.mark.parametrize(("provider_type", "capability"), [
        ("together", "audio_transcription"), ("anyscale", "image_generation"), ("deepseek", "embedding"),
        ("xai", "completions")])
    def test_capability_the_type_does_not_serve_is_rejected(self, gateway_cli, provider_type, capability):
        provider = openai_provider("m", "http://127.0.0.1:9", type=provider_type)
        result = gateway_cli(model_toml("m", {"p": provider}, endpoints=[capability]), "--check-config")
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"does not serve {capability}" in result.stdout + result.stderr

    @pytest.mark.parametrize("provider_type", ["aws_bedrock", "aws_sagemaker", "gcp_vertex_anthropic",
                                               "gcp_vertex_gemini"])
    def test_a_tensorzero_type_not_served_yet_is_refused_naming_the_model(self, gateway_cli, provider_type):
        result = gateway_cli(f'[models.claude]\nrouting = ["p"]\n[models.claude.providers.p]\n'
                             f'type = "{provider_type}"\nmodel_id = "x"\n', "--check-config")
        assert result.returncode == 1
        assert f'models.claude.providers.p.type: provider type "{provider_type}" is not supported yet' in \
            result.stdout + result.stderr
