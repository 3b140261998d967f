"""The ``[models]`` TOML of test configs, built from provider tables instead of written out by hand."""

from __future__ import annotations

import json
import re

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(value: object) -> str:
    """``value`` as TOML: dicts become inline tables; a JSON string, number or boolean is TOML as it is."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _table(header: str, keys: dict[str, object]) -> str:
    return f"\n[{header}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())


def dummy_provider(model_name: str) -> dict[str, object]:
    """A ``dummy`` provider table; ``model_name`` picks its behaviour (hello, echo, error, flaky, ...)."""
    return {"type": "dummy", "model_name": model_name}


def openai_provider(model_name: str, api_base: str, *, type: str = "openai",
                    api_key_location: str | None = "none", **options: object) -> dict[str, object]:
    """An OpenAI-wire provider table (``type`` openai or a compatible one) with ``options`` as further keys.

    No key goes upstream unless a test asks for one; ``api_key_location=None`` leaves the type's default.
    """
    table: dict[str, object] = {"type": type, "model_name": model_name, "api_base": api_base}
    if api_key_location is not None:
        table["api_key_location"] = api_key_location
    return {**table, **options}


def model_toml(name: str, providers: dict[str, dict[str, object]], *,
               endpoints: list[str] | None = None, fallback_models: list[str] | None = None,
               retry_config: dict[str, object] | None = None, pricing: dict[str, object] | None = None) -> str:
    """A ``[models."name"]`` table and its provider tables; ``routing`` tries ``providers`` in their order."""
    settings = {"routing": list(providers), "endpoints": endpoints, "fallback_models": fallback_models,
                "retry_config": retry_config, "pricing": pricing}
    header = f"models.{json.dumps(name)}"
    text = _table(header, {k: v for k, v in settings.items() if v is not None})
    return text + "".join(_table(f"{header}.providers.{_key(p)}", table) for p, table in providers.items())


def local_profile(profile: str, guard_types: list[str] | None, action: str, **detectors: object) -> str:
    """A ``[guardrails."profile"]`` table of one ``local`` provider (``pii``, ``patterns``,
    ``deny_words`` as keywords); ``guard_types`` None leaves the default (input and output)."""
    head = f'[guardrails.{json.dumps(profile)}]\n'
    if guard_types is not None:
        head += f"guard_types = {json.dumps(guard_types)}\n"
    local = f'[guardrails.{json.dumps(profile)}.providers.local]\ntype = "local"\naction = "{action}"\n'
    return "\n" + head + local + "".join(f"{k} = {toml_value(v)}\n" for k, v in detectors.items())


def guarded_model(name: str, provider: dict[str, object], profile: str, **options: object) -> str:
    """``model_toml`` of one provider whose model uses the guardrail profile ``profile``."""
    text = model_toml(name, {"p": provider}, **options)
    return text.replace("\nrouting = ", f'\nguardrail_profile = "{profile}"\nrouting = ', 1)


def azure_provider(deployment_id: str, api_base: str, *, model_name: str = "ok",
                   api_key_location: str | None = None, **options: object) -> dict[str, object]:
    """An ``azure`` provider table: ``api_base`` is the resource's endpoint, ``options`` may set api_version.

    ``model_name`` goes in the body's ``model`` field (it picks the test upstream's behaviour); Azure
    routes by ``deployment_id``. By default the key comes from the type's ``env::AZURE_OPENAI_API_KEY``.
    """
    table: dict[str, object] = {"type": "azure", "model_name": model_name, "api_base": api_base,
                                "deployment_id": deployment_id}
    if api_key_location is not None:
        table["api_key_location"] = api_key_location
    return {**table, **options}


def anthropic_provider(model_name: str, api_base: str, *, api_key_location: str | None = None,
                       **options: object) -> dict[str, object]:
    """An ``anthropic`` provider table; by default the key is read from ``env::ANTHROPIC_API_KEY``."""
    table: dict[str, object] = {"type": "anthropic", "model_name": model_name, "api_base": api_base}
    if api_key_location is not None:
        table["api_key_location"] = api_key_location
    return {**table, **options}


#: Models of every dummy behaviour for in-process app tests (falcon's test client): ``text``, ``echo``
#: (chat and completions), ``chain`` (two failures, then a fallback model), ``limited`` (rate-limited
#: twice), ``flaky`` (one retry), ``slow`` (timed out), ``embed`` (embeddings only).
DUMMY_APP_CONFIG = """
[gateway]
max_body_bytes = 2000

[models.text]
routing = ["d"]
[models.text.providers.d]
type = "dummy"
model_name = "text"

[models.chain]
routing = ["bad", "limited"]
fallback_models = ["echo"]
[models.chain.providers.bad]
type = "dummy"
model_name = "error"
[models.chain.providers.limited]
type = "dummy"
model_name = "rate_limit"

[models.echo]
routing = ["d"]
endpoints = ["chat", "completions"]
[models.echo.providers.d]
type = "dummy"
model_name = "echo"

[models.limited]
routing = ["a", "b"]
[models.limited.providers.a]
type = "dummy"
model_name = "rate_limit"
[models.limited.providers.b]
type = "dummy"
model_name = "rate_limit"

[models.flaky]
routing = ["f"]
retry_config = { num_retries = 1, max_delay_s = 0.01 }
[models.flaky.providers.f]
type = "dummy"
model_name = "flaky"

[models.slow]
routing = ["s"]
[models.slow.providers.s]
type = "dummy"
model_name = "slow"
timeouts = { non_streaming = { total_ms = 50 }, streaming = { ttft_ms = 50 } }

[models.embed]
routing = ["d"]
endpoints = ["embedding"]
[models.embed.providers.d]
type = "dummy"
model_name = "text"
"""
