"""The Redis-backed stores without Redis: RSA decryption of credentials, the API key table and its auth
stage (through ``falcon.testing``), and model table entries made into models; values written by ``budapp``."""

from __future__ import annotations

import json
import logging
import uuid

import falcon
import pytest
from budapp import (
    BASE64,
    HEX,
    OAEP,
    PKCS1V15,
    grant,
    hash_key,
    key_entry,
    model_entry,
    new_raw_key,
    openai_section,
    out_of_range_ciphertext,
    session_key_pair,
    store_location,
    wrong_key_ciphertext,
)
from falcon import testing

from gateway.errors import GatewayError
from gateway.pipeline.auth import AuthStage
from gateway.pipeline.context import ContextStage, GatewayRequest
from gateway.stores import keys as key_store
from gateway.stores.crypto import CredentialDecryptor, DecryptionError, KeyLoadError, load_decryptor
from gateway.stores.keys import KeyTable
from gateway.stores.models import parse_model_entry, store_name
from providers.credentials import Secret
from providers.registry import build_registry

CREDENTIAL = "sk-unit-credential-0123456789"
PASSWORD = "unit-pem-password"
#: sha256_hex("bud-sk-test-123"), worked out once with ``sha256sum``: the hash budapp stores that key under.
KNOWN_KEY, KNOWN_HASH = "sk-test-123", "31cc9ee698f1f2d18c787210f5217b760b4058000f024edf0a178ddb53ff4b59"
API_BASE = "http://127.0.0.1:9/v1"
FRAGMENT = 16
NOT_A_PEM = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"


@pytest.fixture(scope="module")
def pair():
    return session_key_pair("main")


@pytest.fixture(scope="module")
def other_pair():
    return session_key_pair("other")


@pytest.fixture(scope="module")
def decryptor(pair) -> CredentialDecryptor:
    return load_decryptor({"TENSORZERO_RSA_PRIVATE_KEY": pair.pkcs1_pem()})


@pytest.fixture(scope="module")
def registry():
    return build_registry()


class TestLoadDecryptor:
    @pytest.mark.parametrize("form", ["pkcs1", "pkcs8", "encrypted-pkcs8"])
    def test_inline_pem_of_each_kind(self, pair, form):
        environ = {"TENSORZERO_RSA_PRIVATE_KEY": {
            "pkcs1": pair.pkcs1_pem, "pkcs8": pair.pkcs8_pem,
            "encrypted-pkcs8": lambda: pair.encrypted_pkcs8_pem(PASSWORD)}[form]()}
        if form == "encrypted-pkcs8":
            environ["TENSORZERO_RSA_PRIVATE_KEY_PASSWORD"] = PASSWORD
        assert load_decryptor(environ).decrypt(pair.encrypt(CREDENTIAL)) == CREDENTIAL

    def test_pem_from_a_file(self, pair, tmp_path):
        path = tmp_path / "key.pem"
        path.write_text(pair.pkcs8_pem())
        decryptor = load_decryptor({"TENSORZERO_RSA_PRIVATE_KEY_PATH": str(path)})
        assert decryptor.decrypt(pair.encrypt(CREDENTIAL)) == CREDENTIAL

    def test_no_key_passes_values_through(self):
        decryptor = load_decryptor({})
        assert not decryptor.enabled
        assert decryptor.decrypt(CREDENTIAL) == CREDENTIAL

    @pytest.mark.parametrize("case", ["not-a-pem", "wrong-password", "no-password", "public-key",
                                      "missing-file"])
    def test_unusable_key_raises_key_load_error_without_the_key(self, pair, tmp_path, case):
        encrypted = pair.encrypted_pkcs8_pem(PASSWORD)
        environ = {
            "not-a-pem": {"TENSORZERO_RSA_PRIVATE_KEY": NOT_A_PEM},
            "wrong-password": {"TENSORZERO_RSA_PRIVATE_KEY": encrypted,
                               "TENSORZERO_RSA_PRIVATE_KEY_PASSWORD": "not-" + PASSWORD},
            "no-password": {"TENSORZERO_RSA_PRIVATE_KEY": encrypted},
            "public-key": {"TENSORZERO_RSA_PRIVATE_KEY": pair.public_pem()},
            "missing-file": {"TENSORZERO_RSA_PRIVATE_KEY_PATH": str(tmp_path / "absent.pem")},
        }[case]
        with pytest.raises(KeyLoadError) as exc:
            load_decryptor(environ)
        assert encrypted.splitlines()[2] not in str(exc.value) and PASSWORD not in str(exc.value)


class TestDecrypt:
    @pytest.mark.parametrize("padding", [OAEP, PKCS1V15])
    @pytest.mark.parametrize("encoding", [HEX, BASE64])
    def test_each_padding_and_encoding(self, pair, decryptor, padding, encoding):
        assert decryptor.decrypt(pair.encrypt(CREDENTIAL, padding=padding, encoding=encoding)) == CREDENTIAL

    def test_upper_case_hex_is_hex(self, pair, decryptor):
        assert decryptor.decrypt(pair.encrypt(CREDENTIAL).upper()) == CREDENTIAL

    @pytest.mark.parametrize("padding", [OAEP, PKCS1V15])
    def test_other_keys_ciphertext_raises_decryption_error(self, pair, other_pair, decryptor, padding):
        ciphertext = wrong_key_ciphertext(CREDENTIAL, other_pair, pair, padding=padding)
        with pytest.raises(DecryptionError) as exc:
            decryptor.decrypt(ciphertext)
        assert CREDENTIAL not in str(exc.value) and ciphertext[:FRAGMENT] not in str(exc.value)

    def test_ciphertext_out_of_the_keys_range_raises_decryption_error(self, pair, decryptor):
        # What a wrong key of the same size produces for about half of all credentials.
        with pytest.raises(DecryptionError):
            decryptor.decrypt(out_of_range_ciphertext(pair))

    @pytest.mark.parametrize("value", ["deadbeef", "c2stcGxhaW4tYmFzZTY0", "truncated"])
    def test_ciphertext_of_the_wrong_length_raises_decryption_error(self, pair, decryptor, value):
        value = pair.encrypt(CREDENTIAL)[:-2] if value == "truncated" else value
        with pytest.raises(DecryptionError):
            decryptor.decrypt(value)

    def test_neither_hex_nor_base64_raises_decryption_error(self, decryptor):
        with pytest.raises(DecryptionError):
            decryptor.decrypt("not *base64* at all")


def _table_with(raw_key: str, models: dict, **kwargs) -> KeyTable:
    table = KeyTable()
    table.put(hash_key(raw_key), json.dumps(key_entry(models)), **kwargs)
    return table


class TestKeyTable:
    def test_lookup_hash_is_sha256_hex_of_bud_and_the_key(self):
        assert key_store.hash_key(KNOWN_KEY) == hash_key(KNOWN_KEY) == KNOWN_HASH

    def test_raw_key_finds_its_models(self):
        key = new_raw_key()
        _, models = _table_with(key, {"gpt": grant("ep-1")}).lookup(key)
        assert {name: g.endpoint_id for name, g in models.items()} == {"gpt": "ep-1"}

    def test_grant_keeps_model_project_and_prompt_fields(self):
        key = new_raw_key()
        prompt = grant("ep-1", prompt_id="pr", prompt_version_id="pv", version=3)
        _, models = _table_with(key, {"p": prompt}).lookup(key)
        g = models["p"]
        assert (g.model_id, g.project_id, g.prompt_id, g.prompt_version_id, g.version) == (
            "model-ep-1", "project-test", "pr", "pv", 3)

    def test_metadata_names_key_user_and_project(self):
        key, table = new_raw_key(), KeyTable()
        metadata = {"api_key_id": "k-1", "user_id": "u-1", "api_key_project_id": "p-1"}
        table.put(hash_key(key), json.dumps(key_entry({"gpt": grant("ep-1")}, metadata)))
        entry, _ = table.lookup(key)
        assert (entry.api_key_id, entry.user_id, entry.project_id) == ("k-1", "u-1", "p-1")

    def test_unknown_key_is_none(self):
        assert _table_with(new_raw_key(), {"gpt": grant("ep-1")}).lookup(new_raw_key()) is None

    def test_stored_hash_is_not_a_key(self):
        key = new_raw_key()
        assert _table_with(key, {"gpt": grant("ep-1")}).lookup(hash_key(key)) is None

    def test_removed_key_is_none(self):
        key = new_raw_key()
        table = _table_with(key, {"gpt": grant("ep-1")})
        table.remove(hash_key(key))
        assert table.lookup(key) is None

    @pytest.mark.parametrize(("ttl_s", "known"), [(3600, True), (None, True), (-1, True), (0, False)])
    def test_ttl_is_the_keys_expiry(self, ttl_s, known):
        key = new_raw_key()
        assert (_table_with(key, {"gpt": grant("ep-1")}, ttl_s=ttl_s).lookup(key) is not None) is known


class TestPublishedModels:
    @pytest.fixture
    def table(self) -> KeyTable:
        table = KeyTable()
        table.set_published(json.dumps(key_entry({"pub": grant("ep-pub"), "gpt": grant("ep-pub-gpt")}, {})))
        return table

    def test_client_key_gets_published_and_own_models(self, table):
        key = new_raw_key("bud_client_")
        table.put(hash_key(key), json.dumps(key_entry({"gpt": grant("ep-own")})))
        _, models = table.lookup(key)
        assert {n: g.endpoint_id for n, g in models.items()} == {"pub": "ep-pub", "gpt": "ep-own"}

    def test_other_keys_get_only_their_own(self, table):
        key = new_raw_key("bud_")
        table.put(hash_key(key), json.dumps(key_entry({"gpt": grant("ep-own")})))
        assert set(table.lookup(key)[1]) == {"gpt"}


class TestEntriesThatDoNotParse:
    def test_grant_lacking_a_field_is_skipped_with_a_warning(self, caplog):
        key = new_raw_key()
        bad = {"model_id": "m", "project_id": "p"}
        with caplog.at_level(logging.WARNING):
            _, models = _table_with(key, {"gpt": grant("ep-1"), "bad": bad, "odd": "text"}).lookup(key)
        assert set(models) == {"gpt"}
        assert "'bad'" in caplog.text and "'odd'" in caplog.text

    def test_warning_names_the_key_by_a_hash_prefix_only(self, caplog):
        key = new_raw_key()
        with caplog.at_level(logging.WARNING):
            _table_with(key, {"bad": {"model_id": "m"}})
        assert hash_key(key)[:8] in caplog.text
        assert key not in caplog.text and hash_key(key) not in caplog.text

    @pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"'])
    def test_entry_that_does_not_parse_is_skipped_with_a_warning(self, caplog, raw):
        key, table = new_raw_key(), KeyTable()
        with caplog.at_level(logging.WARNING):
            table.put(hash_key(key), raw)
        assert "skipped" in caplog.text
        assert table.lookup(key) is None


class _Grants:
    """Answers with the model names auth left on the context."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = sorted(req.context.grants)


class _Open:
    auth = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = "open"


def _gateway_error(req: falcon.Request, resp: falcon.Response, ex: GatewayError, params: dict) -> None:
    resp.status = ex.status
    resp.media = {"message": str(ex)}


AUTH_KEY = new_raw_key()


@pytest.fixture(scope="module")
def auth_client() -> testing.TestClient:
    """A Falcon app of the context and auth stages only, with one key in the table."""
    table = _table_with(AUTH_KEY, {"gpt": grant("ep-1")})
    table.loaded = True
    app = falcon.App(request_type=GatewayRequest, middleware=[ContextStage(), AuthStage(table)])
    app.add_route("/v1/models", _Grants())
    app.add_route("/health", _Open())
    app.add_error_handler(GatewayError, _gateway_error)
    return testing.TestClient(app)


class TestAuthStage:
    KEY = AUTH_KEY

    @pytest.fixture
    def client(self, auth_client) -> testing.TestClient:
        return auth_client

    @pytest.mark.parametrize("header", [f"Bearer {KEY}", KEY])
    def test_key_with_or_without_the_bearer_prefix(self, client, header):
        result = client.simulate_get("/v1/models", headers={"Authorization": header})
        assert (result.status_code, result.json) == (200, ["gpt"])

    def test_missing_header_is_401(self, client):
        result = client.simulate_get("/v1/models")
        assert (result.status_code, result.json["message"]) == (401, "Missing authorization header")

    @pytest.mark.parametrize("header", [f"Bearer {new_raw_key()}", "Bearer ", f"Bearer {hash_key(KEY)}"])
    def test_unknown_key_is_401(self, client, header):
        result = client.simulate_get("/v1/models", headers={"Authorization": header})
        assert (result.status_code, result.json["message"]) == (401, "Invalid API key")

    def test_open_resource_needs_no_key(self, client):
        assert client.simulate_get("/health").status_code == 200


class TestModelEntry:
    def _entry(self, registry, decryptor, endpoint: str, credential_text: str | None, **settings):
        raw = json.dumps(model_entry(endpoint, {"p": openai_section(API_BASE, "m-upstream")},
                                     api_key=credential_text, **settings))
        return parse_model_entry(endpoint, raw, registry, decryptor)

    def test_credential_is_decrypted_into_a_secret_of_the_store(self, registry, decryptor, pair):
        endpoint = str(uuid.uuid4())
        entry = self._entry(registry, decryptor, endpoint, pair.encrypt(CREDENTIAL))
        assert isinstance(entry.secret, Secret) and entry.secret.reveal() == CREDENTIAL
        assert CREDENTIAL not in repr(entry.secret)
        assert store_name(endpoint) == f"store_{endpoint}"
        assert entry.model.providers["p"].api_key_location == store_location(endpoint)

    def test_model_settings_are_read_as_in_toml(self, registry, decryptor, pair):
        entry = self._entry(registry, decryptor, "ep-1", pair.encrypt(CREDENTIAL),
                            endpoints=["chat", "embedding"],
                            retry_config={"num_retries": 2, "max_delay_s": 1})
        model = entry.model
        assert (model.name, model.routing) == ("ep-1", ("p",))
        assert model.endpoints == frozenset({"chat", "embedding"})
        assert (model.retry.num_retries, model.providers["p"].model_name) == (2, "m-upstream")

    def test_rate_limits_are_read_and_the_guardrail_profile_is_ignored(self, registry, decryptor, pair):
        entry = self._entry(registry, decryptor, "ep-1", pair.encrypt(CREDENTIAL), guardrail_profile="strict")
        assert entry.unavailable is None and entry.model is not None
        limits = entry.model.rate_limits
        assert (limits.algorithm, limits.requests_per_minute, limits.tokens_per_minute) == ("token_bucket", 600, 100_000)

    def test_credential_is_used_as_written_without_a_key(self, registry):
        entry = self._entry(registry, CredentialDecryptor(None), "ep-1", CREDENTIAL)
        assert entry.secret.reveal() == CREDENTIAL

    def test_undecryptable_credential_makes_the_model_unavailable(self, registry, decryptor, pair, other_pair,
                                                                  caplog):
        ciphertext = wrong_key_ciphertext(CREDENTIAL, other_pair, pair)
        with caplog.at_level(logging.WARNING):
            entry = self._entry(registry, decryptor, "ep-1", ciphertext)
        assert (entry.model, entry.secret) == (None, None)
        assert "credential" in entry.unavailable
        assert "ep-1" in caplog.text
        assert CREDENTIAL not in caplog.text and ciphertext[:FRAGMENT] not in caplog.text

    @pytest.mark.parametrize("stored", ["out-of-range", "truncated"])
    def test_malformed_ciphertext_makes_the_model_unavailable(self, registry, decryptor, pair, stored):
        value = out_of_range_ciphertext(pair) if stored == "out-of-range" else pair.encrypt(CREDENTIAL)[:-2]
        entry = self._entry(registry, decryptor, "ep-1", value)
        assert entry.model is None and "credential" in entry.unavailable

    def test_invalid_model_is_unavailable(self, registry, decryptor):
        entry = self._entry(registry, decryptor, "ep-1", None, routing=["absent"])
        assert entry.model is None and entry.unavailable

    def test_value_that_is_not_json_is_no_model(self, registry, decryptor):
        assert parse_model_entry("ep-1", "{not json", registry, decryptor) is None
