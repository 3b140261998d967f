"""api_key_location resolution and secrets that never show in a repr."""

import pytest

from providers.base import CredentialError
from providers.credentials import Credential, Secret, parse_location
from providers.dummy import DummyProvider
from providers.registry import RegistryError, build_registry


class TestCredential:
    def test_env(self, monkeypatch):
        monkeypatch.setenv("BG_TEST_KEY", "sk-1")
        assert Credential("env::BG_TEST_KEY").get().reveal() == "sk-1"

    def test_missing_env_fails_at_request_time(self, monkeypatch):
        monkeypatch.delenv("BG_TEST_KEY", raising=False)
        c = Credential("env::BG_TEST_KEY")
        assert "BG_TEST_KEY" in c.error
        with pytest.raises(CredentialError):
            c.get()

    def test_path(self, tmp_path):
        f = tmp_path / "key"
        f.write_text("sk-file\n")
        assert Credential(f"path::{f}").get().reveal() == "sk-file"

    def test_path_from_env(self, tmp_path, monkeypatch):
        f = tmp_path / "key"
        f.write_text("sk-2")
        monkeypatch.setenv("BG_KEY_PATH", str(f))
        assert Credential("path_from_env::BG_KEY_PATH").get().reveal() == "sk-2"

    def test_unreadable_path(self, tmp_path):
        assert "cannot read" in Credential(f"path::{tmp_path / 'none'}").error

    def test_none(self):
        assert Credential("none").get() is None

    def test_dynamic_reads_the_store_at_request_time(self):
        store = {}
        c = Credential("dynamic::store_1", store)
        with pytest.raises(CredentialError):
            c.get()
        store["store_1"] = Secret("sk-dyn")
        assert c.get().reveal() == "sk-dyn"

    def test_secret_repr_hides_the_value(self):
        s = Secret("sk-very-secret")
        assert "sk-very" not in repr(s) and "sk-very" not in str(s) and "sk-very" not in f"{[s]}"

    @pytest.mark.parametrize("bad", ["env:X", "env::", "vault::x", "NONE"])
    def test_bad_locations(self, bad):
        with pytest.raises(ValueError):
            parse_location(bad)


class TestRegistry:
    def test_builtins(self):
        registry = build_registry()
        assert {"openai", "vllm", "sglang", "tgi", "bud", "dummy"} <= set(registry)

    def test_registry_is_frozen(self):
        with pytest.raises(TypeError):
            build_registry()["x"] = DummyProvider

    def test_duplicate_type_is_rejected(self):
        class Again(DummyProvider):
            pass

        with pytest.raises(RegistryError, match='"dummy" is already registered'):
            build_registry([Again])

    def test_non_provider_is_rejected(self):
        with pytest.raises(RegistryError):
            build_registry([object])
