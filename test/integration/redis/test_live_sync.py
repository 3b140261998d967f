"""Changes budapp makes in Redis while the gateway runs: each must be effective within a second (keyspace
notifications), and what notifications miss must be caught by the full resync."""

from __future__ import annotations

import uuid

import pytest
from budapp import (
    CLIENT_KEY_PREFIX,
    PUBLISHED,
    grant,
    new_raw_key,
    openai_section,
    store_location,
    wrong_key_ciphertext,
)

from .polling import CHANGE_VISIBLE_S, wait_loaded, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
#: A key's Redis TTL in the expiry tests.
KEY_TTL_S = 1.0
#: The resync gateway's ``resync_interval_s``, and how long past it a missed change may take to show.
RESYNC_INTERVAL_S = 1.5
RESYNC_MARGIN_S = 1.5
SECRET_FRAGMENT_CHARS = 16
SYNC_DB, RESYNC_DB = 0, 1


def _ep() -> str:
    return str(uuid.uuid4())


def _credential() -> str:
    return f"sk-live-{uuid.uuid4().hex}"


def _chat(gw, key: str, model: str):
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES},
                      headers={"Authorization": f"Bearer {key}"})


def _within(timeout: float, predicate) -> float:
    """Seconds until ``predicate`` held; fails the test if it did not within ``timeout``."""
    elapsed = wait_until(predicate, timeout)
    assert elapsed is not None, f"not effective within {timeout} s"
    return elapsed


@pytest.fixture(scope="module")
def writer(redis_server, budapp_factory, key_pair):
    return budapp_factory(redis_server, SYNC_DB, key_pair)


@pytest.fixture(scope="module")
def gw(module_gateway_factory, redis_server, writer, key_pair, store_env):
    settings = {"debug": True}
    env = store_env(redis_server.url(SYNC_DB), private_key=key_pair.pkcs1_pem())
    gateway = module_gateway_factory("", settings=settings, env=env)
    wait_loaded(gateway)
    return gateway


@pytest.fixture
def model(writer, upstream):
    """``add(provider_model, credential=None) -> (key, endpoint_id, credential)``: a model, a key for it."""

    def add(provider_model: str = "ok-live", credential: str | None = None) -> tuple[str, str, str]:
        endpoint, credential, key = _ep(), credential or _credential(), new_raw_key()
        writer.put_model(endpoint, {"p": openai_section(upstream.url, provider_model)}, credential=credential)
        writer.put_key(key, {"live": grant(endpoint)})
        return key, endpoint, credential

    return add


def _served(gw, upstream, key: str, provider_model: str, credential: str) -> bool:
    """Whether ``live`` answers for ``key`` from ``provider_model`` with ``credential`` upstream."""
    if _chat(gw, key, "live").status != 200:
        return False
    rec = upstream.requests[-1]
    return (rec.model, rec.headers.get("authorization")) == (provider_model, f"Bearer {credential}")


class TestModels:
    def test_model_added_is_served_within_a_second(self, gw, writer, upstream):
        key, endpoint = new_raw_key(), _ep()
        writer.put_key(key, {"live": grant(endpoint)})
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, key, "live").status == 404)
        credential = _credential()
        writer.put_model(endpoint, {"p": openai_section(upstream.url, "ok-added")}, credential=credential)
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-added", credential))

    def test_model_changed_is_served_as_changed_within_a_second(self, gw, writer, upstream, model):
        key, endpoint, credential = model("ok-before")
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-before", credential))
        new_credential = _credential()
        writer.put_model(endpoint, {"p": openai_section(upstream.url, "ok-after")}, credential=new_credential)
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-after", new_credential))

    def test_model_deleted_is_404_within_a_second(self, gw, writer, upstream, model):
        key, endpoint, credential = model()
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-live", credential))
        writer.delete_model(endpoint)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, key, "live").status == 404)

    def test_deleted_models_credential_is_forgotten(self, gw, writer, upstream, model):
        key, endpoint, credential = model()
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-live", credential))
        writer.delete_model(endpoint)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, key, "live").status == 404)
        upstream.clear()
        # The same entry again, its provider still naming the store, but with no credential in it.
        section = openai_section(upstream.url, "ok-live", api_key_location=store_location(endpoint))
        writer.put_model(endpoint, {"p": section})
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, key, "live").status != 404)
        old = f"Bearer {credential}"
        assert [r for r in upstream.requests if r.headers.get("authorization") == old] == []

    def test_credential_that_stops_decrypting_makes_the_model_503_within_a_second(
            self, gw, writer, upstream, model, key_pair, other_key_pair):
        key, endpoint, credential = model()
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-live", credential))
        writer.put_model(endpoint, {"p": openai_section(upstream.url, "ok-live")},
                         api_key=wrong_key_ciphertext(credential, other_key_pair, key_pair))
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, key, "live").status == 503)


class TestKeys:
    def test_key_added_is_accepted_within_a_second(self, gw, writer, upstream, model):
        key, endpoint, credential = model()
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-live", credential))
        other = new_raw_key()
        assert _chat(gw, other, "live").status == 401
        writer.put_key(other, {"live": grant(endpoint)})
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, other, "live").status == 200)

    def test_key_deleted_is_401_within_a_second(self, gw, writer, upstream, model):
        key, _, credential = model()
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-live", credential))
        writer.delete_key(key)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, key, "live").status == 401)

    def test_model_granted_to_a_key_is_usable_within_a_second(self, gw, writer, upstream, model):
        key, endpoint, credential = model()
        _within(CHANGE_VISIBLE_S, lambda: _served(gw, upstream, key, "ok-live", credential))
        assert _chat(gw, key, "also-live").status == 404
        writer.put_key(key, {"live": grant(endpoint), "also-live": grant(endpoint)})
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, key, "also-live").status == 200)

    def test_key_expires_with_its_ttl(self, gw, writer, upstream, model):
        key, endpoint, _ = model()
        short = new_raw_key()
        writer.put_key(short, {"live": grant(endpoint)}, ttl_s=KEY_TTL_S)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, short, "live").status == 200)
        _within(KEY_TTL_S + CHANGE_VISIBLE_S, lambda: _chat(gw, short, "live").status == 401)

    def test_key_whose_ttl_is_extended_stays_valid(self, gw, writer, upstream, model):
        key, endpoint, _ = model()
        extended = new_raw_key()
        writer.put_key(extended, {"live": grant(endpoint)}, ttl_s=KEY_TTL_S)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, extended, "live").status == 200)
        writer.expire_key(extended, 60 * KEY_TTL_S)
        # Past the first expiry (and the one second a change may take), the key must still be accepted.
        rejected = wait_until(lambda: _chat(gw, extended, "live").status != 200, KEY_TTL_S + CHANGE_VISIBLE_S)
        assert rejected is None, f"the key was rejected {rejected:.2f} s after its TTL was extended"


class TestPublishedModels:
    def test_published_model_is_usable_by_a_client_key_within_a_second(self, gw, writer, model):
        _, endpoint, _ = model()
        client_key = new_raw_key(CLIENT_KEY_PREFIX + "_")
        writer.put_key(client_key, {})
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, client_key, "pub-live").status == 404)
        writer.publish({"pub-live": grant(endpoint)})
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, client_key, "pub-live").status == 200)

    def test_unpublished_model_is_404_within_a_second(self, gw, writer, model):
        _, endpoint, _ = model()
        client_key = new_raw_key(CLIENT_KEY_PREFIX + "_")
        writer.put_key(client_key, {})
        writer.publish({"pub-gone": grant(endpoint)})
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, client_key, "pub-gone").status == 200)
        writer.client.delete(PUBLISHED)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, client_key, "pub-gone").status == 404)


class TestFullResync:
    """A gateway with a short ``resync_interval_s``, on a database of its own; Redis does not notify."""

    @pytest.fixture
    def quiet_redis(self, redis_server):
        """Keyspace notifications off for the test (the gateway checks them only when it connects)."""
        admin = redis_server.client()
        admin.config_set("notify-keyspace-events", "")
        yield
        admin.config_set("notify-keyspace-events", "KEA")

    def test_change_without_a_notification_is_picked_up_by_the_resync(
            self, gateway_factory, redis_server, budapp_factory, key_pair, upstream, store_env, quiet_redis):
        writer = budapp_factory(redis_server, RESYNC_DB, key_pair)
        settings = {"authentication": {"resync_interval_s": RESYNC_INTERVAL_S}}
        env = store_env(redis_server.url(RESYNC_DB), private_key=key_pair.pkcs1_pem())
        gateway = gateway_factory("", settings=settings, env=env)
        wait_loaded(gateway)
        key, endpoint, credential = new_raw_key(), _ep(), _credential()
        writer.put_model(endpoint, {"p": openai_section(upstream.url, "ok-resync")}, credential=credential)
        writer.put_key(key, {"live": grant(endpoint)})
        _within(RESYNC_INTERVAL_S + RESYNC_MARGIN_S,
                lambda: _served(gateway, upstream, key, "ok-resync", credential))


class TestNoSecretLeaks:
    def test_gateway_log_holds_no_key_credential_or_ciphertext(self, gw, writer):
        log = gw.log()
        assert [s[:SECRET_FRAGMENT_CHARS] for s in writer.secrets if s[:SECRET_FRAGMENT_CHARS] in log] == []
