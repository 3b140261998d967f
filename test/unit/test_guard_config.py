"""Guardrail profiles in the config: what is read, and every refusal with its key path."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config_text
from providers.registry import build_registry

MODEL = """
[models.m]
routing = ["d"]
guardrail_profile = "p"
[models.m.providers.d]
type = "dummy"
model_name = "echo"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(MODEL + text, "t.toml", build_registry())
    return info.value.errors


def test_a_profile_is_read():
    config = load_config_text(MODEL + """
[guardrails.p]
guard_types = ["output"]
execution_mode = "sequential"
failure_mode = "fail_fast"
severity_threshold = 0.8
[guardrails.p.providers.local]
type = "local"
pii = ["email"]
action = "redact"
""", "t.toml", build_registry())
    profile = config.guardrails["p"]
    assert (profile.guard_types, profile.execution_mode, profile.failure_mode) == (
        frozenset({"output"}), "sequential", "fail_fast")
    assert profile.severity_threshold == 0.8 and profile.providers[0].options["action"] == "redact"


@pytest.mark.parametrize(("text", "error"), [
    ("[guardrails.p]\nseverity_threshold = 5\n[guardrails.p.providers.l]\ntype = \"local\"\npii = [\"email\"]\n",
     "guardrails.p.severity_threshold: must be between 0 and 1 (a moderation score), got 5"),
    ("[guardrails.p]\n[guardrails.p.providers.l]\ntype = \"local\"\n",
     "guardrails.p.providers.l: finds nothing: set pii, patterns or deny_words"),
    ("[guardrails.p]\nguard_types = [\"both\"]\n[guardrails.p.providers.l]\ntype = \"local\"\npii = [\"ip\"]\n",
     'guardrails.p.guard_types[0]: one of "input", "output"'),
    ("[guardrails.p]\n[guardrails.p.providers.l]\ntype = \"local\"\npii = [\"ip\"]\naction = \"mask\"\n",
     'guardrails.p.providers.l.action: one of "block", "redact"'),
    ("[guardrails.p]\n[guardrails.p.providers.m]\ntype = \"openai\"\nseverity_threshold = 2\n",
     "guardrails.p.providers.m.severity_threshold: must be between 0 and 1, got 2"),
    ("[guardrails.p]\n[guardrails.p.providers.m]\ntype = \"openai\"\n"
     "probe_config = { \"omni-moderation-latest\" = [\"hate\", \"rudeness\"] }\n",
     'guardrails.p.providers.m.probe_config.omni-moderation-latest: unknown moderation category "rudeness"'),
])
def test_refusals_name_their_key(text, error):
    assert any(e.startswith(error) for e in errors_of(text)), errors_of(text)
