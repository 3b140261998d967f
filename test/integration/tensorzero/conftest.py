"""A gateway started on a config of ``test/data/tensorzero/``: the folder is copied (so its relative
schema and template paths hold), the loopback upstreams' addresses are put in for ``{upstream}`` and
``{raw}``, and the file is served as it is, its own ``[gateway]`` table included."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Gateway, gateway_env

CORPUS = Path(__file__).resolve().parents[2] / "data" / "tensorzero"


def corpus_text(name: str, **addresses: str) -> str:
    text = (CORPUS / name / "tensorzero.toml").read_text()
    for key, value in addresses.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.fixture(scope="module")
def corpus_gateway(tmp_path_factory) -> Iterator:
    """``start(name, env=None, **addresses)``: a gateway on corpus config ``name``."""
    started: list[Gateway] = []

    def start(name: str, env: dict[str, str] | None = None, **addresses: str) -> Gateway:
        workdir = tmp_path_factory.mktemp("tz") / name
        shutil.copytree(CORPUS / name, workdir)
        gw = Gateway(workdir, corpus_text(name, **addresses), (), gateway_env(env))
        started.append(gw)
        gw.wait_ready()
        return gw

    try:
        yield start
    finally:
        for gw in started:
            gw.stop()
