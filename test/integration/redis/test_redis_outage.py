"""Redis going away and coming back: the gateway keeps serving from what it loaded, says so on /health,
reconnects with a backoff and resyncs; and a gateway that starts before its Redis fails closed until it loads.

The module's Redis requires a password, which (like every key and credential) must never reach the log.
The tests run in order: those of ``TestWhileRedisIsDown`` with Redis stopped, then it is started again
(empty: nothing is persisted) for ``TestAfterRedisRestarts``.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from budapp import grant, new_raw_key, openai_section

from .polling import CHANGE_VISIBLE_S, redis_health, wait_loaded, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
REDIS_PASSWORD = f"redis-pw-{uuid.uuid4().hex}"
#: The TTL of a key written just before Redis stops: it must expire from the gateway's memory meanwhile.
KEY_TTL_S = 1.5
#: How soon the gateway must notice that Redis is gone (its subscription breaks at once).
NOTICE_DOWN_S = 2.0
#: The backoff doubles from 1 s, so an outage of D seconds ends in a reconnect by about 2 D + 1 s;
#: these outages last under 3 s.
RECONNECT_TIMEOUT_S = 8.0
FIRST_BACKOFFS_S = [1, 2]
SECRET_FRAGMENT_CHARS = 16
_BACKOFF = re.compile(r"redis unreachable .*retrying in (\d+) s")


def _chat(gw, key: str, model: str = "live"):
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES},
                      headers={"Authorization": f"Bearer {key}"})


class _World:
    """What the module wrote to Redis before it went down."""

    def __init__(self, writer, api_base: str) -> None:
        self.writer = writer
        self.api_base = api_base
        self.endpoint = str(uuid.uuid4())
        self.credential = f"sk-outage-{uuid.uuid4().hex}"
        self.key = new_raw_key()
        self.short_key = new_raw_key()
        self.short_key_expires_at = 0.0
        self.never_seen_key = new_raw_key()
        writer.secrets += [self.never_seen_key, REDIS_PASSWORD]

    def write(self) -> None:
        self.writer.put_model(self.endpoint, {"p": openai_section(self.api_base, "ok-outage")},
                              credential=self.credential)
        self.writer.put_key(self.key, {"live": grant(self.endpoint)})


@pytest.fixture(scope="module")
def server(module_redis_factory):
    return module_redis_factory(REDIS_PASSWORD)


@pytest.fixture(scope="module")
def world(server, budapp_factory, key_pair, upstream):
    world = _World(budapp_factory(server, 0, key_pair), upstream.url)
    world.write()
    return world


@pytest.fixture(scope="module")
def gw(module_gateway_factory, server, world, key_pair, store_env):
    env = store_env(server.url(0), private_key=key_pair.pkcs1_pem())
    gateway = module_gateway_factory("", settings={"debug": True}, env=env)
    wait_loaded(gateway)
    assert _chat(gateway, world.key).status == 200
    return gateway


@pytest.fixture(scope="module")
def redis_down(gw, server, world):
    """Redis stopped, right after a key with a short TTL was loaded."""
    world.writer.put_key(world.short_key, {"live": grant(world.endpoint)}, ttl_s=KEY_TTL_S)
    world.short_key_expires_at = time.monotonic() + KEY_TTL_S
    assert wait_until(lambda: _chat(gw, world.short_key).status == 200, CHANGE_VISIBLE_S) is not None
    server.stop()
    assert wait_until(lambda: redis_health(gw) == "error", NOTICE_DOWN_S) is not None, gw.log()


@pytest.fixture(scope="module")
def redis_restarted(redis_down, gw, server):
    server.start()
    assert wait_until(lambda: redis_health(gw) == "ok", RECONNECT_TIMEOUT_S) is not None, gw.log()


@pytest.mark.usefixtures("redis_down")
class TestWhileRedisIsDown:
    def test_health_reports_the_redis_error(self, gw):
        assert gw.request("GET", "/health").json() == {"gateway": "ok", "redis": "error"}

    def test_known_key_is_served_from_memory(self, gw, world, upstream):
        assert _chat(gw, world.key).status == 200
        [rec] = upstream.requests
        assert rec.headers.get("authorization") == f"Bearer {world.credential}"

    def test_never_seen_key_stays_unauthorised(self, gw, world, upstream):
        assert _chat(gw, world.never_seen_key).status == 401
        assert upstream.requests == []

    def test_key_still_expires_with_its_ttl(self, gw, world):
        left = world.short_key_expires_at - time.monotonic()
        expired = wait_until(lambda: _chat(gw, world.short_key).status == 401, left + CHANGE_VISIBLE_S)
        assert expired is not None

    def test_reconnects_back_off_from_one_second(self, gw):
        enough = len(FIRST_BACKOFFS_S)
        wait_until(lambda: len(_BACKOFF.findall(gw.log())) >= enough, sum(FIRST_BACKOFFS_S) + 1)
        delays = [int(d) for d in _BACKOFF.findall(gw.log())]
        assert delays[:len(FIRST_BACKOFFS_S)] == FIRST_BACKOFFS_S, gw.log()


@pytest.mark.usefixtures("redis_restarted")
class TestAfterRedisRestarts:
    def test_health_reports_redis_ok(self, gw):
        assert gw.request("GET", "/health").json() == {"gateway": "ok", "redis": "ok"}

    def test_change_made_after_the_restart_is_picked_up(self, gw, world, upstream):
        key, endpoint, credential = new_raw_key(), str(uuid.uuid4()), f"sk-after-{uuid.uuid4().hex}"
        world.writer.put_model(endpoint, {"p": openai_section(world.api_base, "ok-after")},
                               credential=credential)
        world.writer.put_key(key, {"after": grant(endpoint)})
        assert wait_until(lambda: _chat(gw, key, "after").status == 200, CHANGE_VISIBLE_S) is not None
        assert upstream.requests[-1].headers.get("authorization") == f"Bearer {credential}"

    def test_state_is_resynced_from_the_restarted_redis(self, gw, world):
        # The restarted Redis is empty: the key the gateway held in memory is gone from it.
        assert _chat(gw, world.key).status == 401

    def test_log_holds_no_redis_password_key_or_credential(self, gw, world):
        log = gw.log()
        secrets = world.writer.secrets
        assert [s[:SECRET_FRAGMENT_CHARS] for s in secrets if s[:SECRET_FRAGMENT_CHARS] in log] == []


class TestStartingBeforeRedis:
    def test_fails_closed_until_redis_is_up_then_loads(self, redis_factory, gateway_factory, budapp_factory,
                                                       key_pair, upstream, store_env):
        server = redis_factory()
        server.stop()
        gateway = gateway_factory("", env=store_env(server.url(0), private_key=key_pair.pkcs1_pem()))
        key, endpoint, credential = new_raw_key(), str(uuid.uuid4()), f"sk-late-{uuid.uuid4().hex}"
        assert gateway.request("GET", "/health").json() == {"gateway": "ok", "redis": "error"}
        assert _chat(gateway, key).status in (401, 503)
        server.start()
        writer = budapp_factory(server, 0, key_pair)
        writer.put_model(endpoint, {"p": openai_section(upstream.url, "ok-late")}, credential=credential)
        writer.put_key(key, {"live": grant(endpoint)})
        assert wait_until(lambda: _chat(gateway, key).status == 200, RECONNECT_TIMEOUT_S) is not None
        [rec] = upstream.requests
        assert rec.headers.get("authorization") == f"Bearer {credential}"
