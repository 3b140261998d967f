"""The Lua scripts in a real Redis against the in-process limiter: the same answers to the same
requests, every key of a check in one Cluster slot, scripts Redis has forgotten loaded again, the
edges of settling a bucket; and the limiter's own Redis client across a restart and a hung server."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from redis.crc import key_slot

from gateway.limits.limiter import RateLimiter
from gateway.limits.local import LocalLimiter
from gateway.limits.plan import Check, Limit
from gateway.limits.scripts import CHECKS, SETTLE
from gateway.outcome import Outcome, Usage
from gateway.stores.resp import RespClient

from .polling import wait_until

ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket")


@pytest.fixture
def client(redis_server):
    client = RespClient(redis_server.url(5), 4, 2.0)
    client.execute("FLUSHDB")
    yield client
    client.close()


def run(client, check: Check, member: str) -> list:
    keys = ([check.lease_key] if check.lease_key else []) + list(check.keys)
    argv = [check.lease_max, member, 30_000]
    for limit, cost in zip(check.limits, check.costs, strict=True):
        argv += limit.argv(cost)
    return CHECKS[check.algorithm](client, keys, argv)


def shape(answer: list, limits: int) -> list:
    """An answer without its times (the two clocks differ by microseconds)."""
    return [answer[0], answer[1], answer[3], *[answer[4 + 3 * i] for i in range(limits)]] if answer[0] else answer[:2]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_scripts_answer_as_the_local_limiter_does(client, algorithm):
    limits = (Limit("requests", 3600, 6), Limit("tokens", 3600, 400))
    local = LocalLimiter()
    for i, cost in enumerate([50, 150, 10, 300, 5, 5, 5, 5]):
        c = Check(algorithm, algorithm[:2], f"m=eq|{algorithm}", limits, [1, cost], lease_max=5)
        remote, mine = run(client, c, f"r{i}"), local.check(c, f"r{i}")
        assert shape(remote, 2) == shape(mine, 2), (i, remote, mine)


def test_a_settlement_moves_the_reservation_in_redis(client):
    tokens = Limit("tokens", 3600, 100)
    for algorithm, kind in (("fixed_window", "f"), ("sliding_window", "s"), ("token_bucket", "b")):
        c = Check(algorithm, algorithm[:2], f"m=settle|{algorithm}", (tokens,), [90])
        first = run(client, c, "a")
        assert first[0] == 1 and first[4] == 10
        SETTLE(client, [c.keys[0]], [kind, -80, first[6], 100, tokens.window_ms, tokens.refill, 0])
        c.costs = [50]
        assert run(client, c, "b")[4] == 40, f"{algorithm}: 90 reserved, 10 used, then 50 reserved"


def test_every_key_of_a_check_shares_one_cluster_slot():
    c = Check("sliding_window", "sw", "m=gpt-4o}{odd|k:key-1",
              (Limit("requests", 1, 1), Limit("requests", 60, 1), Limit("tokens", 60, 1)), [1, 1, 1], lease_max=1)
    assert len({key_slot(key.encode()) for key in [*c.keys, c.lease_key]}) == 1


def test_forgotten_scripts_are_loaded_again(client):
    limiter = RateLimiter(client, fail_open=False, lease_ttl_s=30)
    limiter.load_scripts()
    client.execute("SCRIPT", "FLUSH")
    c = Check("fixed_window", "fw", "m=flush|k:1", (Limit("requests", 60, 2),), [1])
    two = Check("token_bucket", "tz", "r=1|2", (Limit("requests", 60, 2),), [1])
    assert limiter.admit([c], "a").admitted
    client.execute("SCRIPT", "FLUSH")
    assert limiter.admit([c, two], "b").admitted, "a pipeline of two checks after a flush"
    refused = limiter.admit([c, two], "c")
    assert not refused.admitted
    assert limiter.admit([two], "d").admitted, "the refused request gave back what the other check took"


def test_a_huge_estimate_neither_locks_a_bucket_nor_fails_the_script(client):
    tokens = Limit("tokens", 60, 100_000)
    c = Check("token_bucket", "tb", "m=huge|k:1", (tokens,), [2 * 10**17])
    assert c.costs == [100_000], "no request reserves more than the whole limit"
    first = run(client, c, "a")
    assert first[0] == 1
    assert 0 < client.execute("PTTL", c.keys[0]) <= 61_000
    SETTLE(client, [c.keys[0]], ["b", 10 - 100_000, 0, 100_000, tokens.window_ms, tokens.refill, 0])
    c.costs = [10]
    assert run(client, c, "b")[0] == 1, "settled to the 10 tokens it used"


def test_a_refund_never_fills_a_bucket_past_its_size(client):
    daily = Limit("tokens", 86_400, 1000, 1000, 86_400)  # a TensorZero rule: refilled once a day
    c = Check("token_bucket", "tz", "r=d|1", (daily,), [400])
    run(client, c, "a")
    SETTLE(client, [c.keys[0]], ["b", -900, 0, 1000, daily.window_ms, daily.refill, daily.step_ms])
    level = float(client.execute("HGET", c.keys[0], "l"))
    assert level == 1000


def test_a_stepped_bucket_keeps_its_state_until_its_next_refill(client):
    daily = Limit("tokens", 86_400, 1000, 1000, 86_400)
    c = Check("token_bucket", "tz", "r=d|2", (daily,), [400])
    run(client, c, "a")
    SETTLE(client, [c.keys[0]], ["b", 1, 0, 1000, daily.window_ms, daily.refill, daily.step_ms])
    assert client.execute("PTTL", c.keys[0]) > 86_000_000, "kept until the day's refill, not 40% of it"


def test_the_client_survives_a_redis_restart_and_never_waits_past_its_timeout(redis_factory):
    server = redis_factory()
    client = RespClient(server.url(), 2, 0.3)
    assert client.execute("PING") == b"PONG"
    server.stop()
    server.start()
    assert client.execute("PING") == b"PONG", "a pooled connection the restart closed is replaced"
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.execute("PING")
        assert time.monotonic() - started < 3.0, "bounded by the client's timeout (0.3 s), not hung"
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    client.close()


def test_settlements_after_a_redis_restart_are_not_lost(redis_factory):
    server = redis_factory()
    client = RespClient(server.url(), 2, 2.0)
    limiter = RateLimiter(client, fail_open=False, lease_ttl_s=30)
    tokens = Limit("tokens", 3600, 1000)

    def settled_count(member: str) -> float:
        c = Check("fixed_window", "fw", "m=restart|k:1", (tokens,), [500])
        admission = limiter.admit([c], member)
        outcome = Outcome(member, 0.0, 0.0)
        outcome.usage = Usage(10, 0)
        limiter.finish(admission, outcome)
        return wait_until(lambda: float(client.execute("HGET", c.keys[0], "c")) < 500, 2.0)

    assert settled_count("before")
    server.stop()
    server.start()
    limiter.load_scripts()
    assert settled_count("after"), "the one-way connection the restart closed was replaced"
    client.close()
