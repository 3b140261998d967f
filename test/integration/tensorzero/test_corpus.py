"""The corpus of TensorZero configs in ``test/data/tensorzero/``: each loads with ``--check-config``
(or is refused the way it should be), lists what it takes without acting on, and serves."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import GATEWAY_CLI_TIMEOUT_S, REPO_ROOT, gateway_env

from .conftest import CORPUS, corpus_text

ADDRESSES = {"upstream": "http://127.0.0.1:9/v1", "raw": "http://127.0.0.1:9/v1"}


def check(tmp_path, name: str) -> subprocess.CompletedProcess:
    path = CORPUS / name / "_check.toml"
    path.write_text(corpus_text(name, **ADDRESSES))
    try:
        return subprocess.run([sys.executable, "-m", "gateway", "--check-config", "--config-file", str(path)],
                              cwd=REPO_ROOT, env=gateway_env(), capture_output=True, text=True,
                              timeout=GATEWAY_CLI_TIMEOUT_S)
    finally:
        path.unlink()


@pytest.mark.parametrize("name", ["functions", "everything"])
def test_the_config_loads_and_lists_what_is_not_acted_on(tmp_path, name):
    result = check(tmp_path, name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (" in result.stdout and "accepted but not implemented:" in result.stdout


def test_every_table_of_the_reference_is_taken(tmp_path):
    listed = check(tmp_path, "everything").stdout.split("accepted but not implemented: ", 1)[1].strip().split(", ")
    for key in ("gateway.relay", "embedding_models", "provider_types", "object_storage", "postgres", "evaluations",
                "functions.assistant.variants.best (type experimental_best_of_n_sampling)",
                "functions.assistant.evaluators"):
        assert key in listed, key
    # What is implemented is not listed.
    for key in ("rate_limiting", "metrics", "tools", "functions.assistant.variants.main.extra_body",
                "models.gpt.providers.openai.cost", "models.gpt.providers.openai.batch_cost",
                "gateway.template_filesystem_access"):
        assert key not in listed, key


def test_the_types_not_served_yet_are_refused_naming_each_model(tmp_path):
    result = check(tmp_path, "unsupported")
    assert result.returncode == 1
    for model, type_ in (("claude-bedrock", "aws_bedrock"), ("llama-sagemaker", "aws_sagemaker"),
                         ("claude-vertex", "gcp_vertex_anthropic"), ("gemini-vertex", "gcp_vertex_gemini")):
        assert f'models.{model}.providers.' in result.stderr and f'"{type_}" is not supported yet' in result.stderr


def test_the_everything_config_serves(corpus_gateway):
    gw = corpus_gateway("everything")
    assert gw.request("GET", "/health").status == 200
    block = {"type": "template", "name": "greeting", "arguments": {"name": "Ada"}}
    resp = gw.request("POST", "/inference", {"function_name": "assistant", "input": {
        "system": {"company": "Acme"}, "messages": [{"role": "user", "content": [block]}]}})
    assert resp.status == 200, resp
    assert resp.json()["variant_name"] == "main" and "Greet Ada." in resp.json()["content"][0]["text"]
    resp = gw.request("POST", "/inference", {"function_name": "classify", "variant_name": "strict",
                                             "input": {"messages": [{"role": "user", "content": '{"label": "x"}'}]}})
    assert resp.status == 200 and resp.json()["output"]["parsed"] == {"label": "x"}
    assert "TensorZero keys accepted but not implemented" in gw.log()
