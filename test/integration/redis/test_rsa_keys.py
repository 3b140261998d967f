"""The RSA private key in each form the environment may give it: inline or from a file, PKCS#1, PKCS#8 and
encrypted PKCS#8 with its password; keys the gateway cannot use, which it refuses without echoing them; and
credentials the key cannot decrypt, which make their model (and only it) unavailable."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from budapp import grant, new_raw_key, openai_section, out_of_range_ciphertext, wrong_key_ciphertext

from .polling import CHANGE_VISIBLE_S, wait_loaded, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
PASSWORD = f"pem-pw-{uuid.uuid4().hex}"
#: Each form, with the Redis database its gateway uses (so the gateways' models do not mix).
FORMS = {"pkcs8-inline": 1, "encrypted-pkcs8-inline": 2, "pkcs1-file": 3, "encrypted-pkcs8-file": 4}
#: A line from inside a PEM body: what must not show in any output.
PEM_BODY_LINE = 2
NOT_A_PEM = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----"
#: Stored credentials the gateway's key cannot decrypt: a wrong key's ciphertext below the modulus (the
#: decryption fails), one at or above it (as about half of a same-size wrong key's are), and a cut one.
UNDECRYPTABLE = ["wrong-key", "out-of-range", "truncated"]


def _undecryptable(case: str, credential: str, key_pair, other_key_pair) -> str:
    if case == "wrong-key":
        return wrong_key_ciphertext(credential, other_key_pair, key_pair)
    if case == "out-of-range":
        return out_of_range_ciphertext(key_pair)
    return key_pair.encrypt(credential)[:-2]


def _chat(gw, key: str, model: str):
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES},
                      headers={"Authorization": f"Bearer {key}"})


def _key_env(form: str, key_pair, tmp_path) -> dict[str, str]:
    """The RSA variables for ``form`` (the PEM written to a file for the ``-file`` forms)."""
    encrypted = form.startswith("encrypted")
    if form.startswith("pkcs1"):
        pem = key_pair.pkcs1_pem()
    else:
        pem = key_pair.encrypted_pkcs8_pem(PASSWORD) if encrypted else key_pair.pkcs8_pem()
    env = {"password": PASSWORD if encrypted else ""}
    if form.endswith("-file"):
        path = tmp_path / "gateway-rsa.pem"
        path.write_text(pem)
        env["private_key_path"] = str(path)
    else:
        env["private_key"] = pem
    return env


class TestKeyForms:
    @pytest.mark.parametrize("form", FORMS)
    def test_credential_decrypts_with_the_key_from_the_env(self, form, gateway_factory, redis_server,
                                                           budapp_factory, key_pair, upstream, store_env,
                                                           tmp_path):
        db = FORMS[form]
        writer = budapp_factory(redis_server, db, key_pair)
        endpoint, credential, key = str(uuid.uuid4()), f"sk-{form}-{uuid.uuid4().hex}", new_raw_key()
        writer.put_model(endpoint, {"p": openai_section(upstream.url, f"ok-{form}")}, credential=credential)
        writer.put_key(key, {"m": grant(endpoint)})
        key_env = _key_env(form, key_pair, tmp_path)
        pem = key_env.get("private_key") or Path(key_env["private_key_path"]).read_text()
        gw = gateway_factory("", env=store_env(redis_server.url(db), **key_env))
        wait_loaded(gw)
        resp = _chat(gw, key, "m")
        assert resp.status == 200, resp
        [rec] = upstream.requests
        assert rec.headers.get("authorization") == f"Bearer {credential}"
        secrets = [PASSWORD, credential, pem.splitlines()[PEM_BODY_LINE]]
        assert [s for s in secrets if s in gw.log()] == []


class TestUnusableKeys:
    @pytest.fixture
    def pem(self, key_pair) -> str:
        return key_pair.encrypted_pkcs8_pem(PASSWORD)

    @pytest.mark.parametrize("case", ["wrong-password", "no-password", "not-a-pem", "missing-file"])
    def test_gateway_refuses_to_start_without_echoing_the_key(self, case, pem, gateway_run, redis_server,
                                                               store_env, tmp_path):
        variables = {
            "wrong-password": {"private_key": pem, "password": "not-" + PASSWORD},
            "no-password": {"private_key": pem},
            "not-a-pem": {"private_key": NOT_A_PEM},
            "missing-file": {"private_key_path": str(tmp_path / "absent.pem")},
        }[case]
        result = gateway_run("[gateway]\n", store_env(redis_server.url(0), **variables))
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "RSA" in output or "TENSORZERO_RSA_PRIVATE_KEY" in output, output
        assert pem.splitlines()[PEM_BODY_LINE] not in output and PASSWORD not in output


class TestCredentialsThatDoNotDecrypt:
    """Each case on a Redis and gateway of its own: a case that stops the sync must not hide the others."""

    @pytest.fixture
    def setup(self, redis_factory, gateway_factory, budapp_factory, key_pair, other_key_pair, upstream,
              store_env):
        """``start(case, at_load)``: a key with a good model and a model whose credential does not decrypt,
        written before the gateway starts or (``at_load=False``) once it has loaded."""

        def start(case: str, at_load: bool):
            server = redis_factory()
            writer = budapp_factory(server, 0, key_pair)
            key, good, bad, credential = new_raw_key(), str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4().hex
            writer.put_model(good, {"p": openai_section(upstream.url, "ok-good")},
                             credential=f"sk-good-{credential}")
            writer.put_key(key, {"good": grant(good), "bad": grant(bad)})

            def write_bad() -> None:
                ciphertext = _undecryptable(case, f"sk-bad-{credential}", key_pair, other_key_pair)
                writer.put_model(bad, {"p": openai_section(upstream.url, "ok-bad")}, api_key=ciphertext)

            if at_load:
                write_bad()
            gw = gateway_factory("", env=store_env(server.url(0), private_key=key_pair.pkcs1_pem()))
            wait_loaded(gw)
            if not at_load:
                write_bad()
            return gw, writer, key

        return start

    @pytest.mark.parametrize("case", UNDECRYPTABLE)
    def test_at_load_only_that_model_is_503(self, setup, case):
        gw, _, key = setup(case, at_load=True)
        assert (_chat(gw, key, "bad").status, _chat(gw, key, "good").status) == (503, 200), gw.log()

    @pytest.mark.parametrize("case", UNDECRYPTABLE)
    def test_written_live_it_is_503_within_a_second(self, setup, case):
        gw, _, key = setup(case, at_load=False)
        assert wait_until(lambda: _chat(gw, key, "bad").status == 503, CHANGE_VISIBLE_S) is not None, gw.log()

    @pytest.mark.parametrize("case", UNDECRYPTABLE)
    def test_written_live_the_sync_goes_on(self, setup, case):
        gw, writer, key = setup(case, at_load=False)
        later = new_raw_key()
        writer.put_key(later, {"good": grant(str(uuid.uuid4()))})
        seen = wait_until(lambda: _chat(gw, later, "good").status == 404, CHANGE_VISIBLE_S)
        assert seen is not None, gw.log()
