"""The Lua scripts in a real Redis against the in-process limiter: the same answers to the same
requests, every key of a check in one Cluster slot, and scripts Redis has forgotten loaded again."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from gateway.limits.limiter import RateLimiter
from gateway.limits.local import LocalLimiter
from gateway.limits.plan import Check, Limit
from gateway.limits.scripts import CHECKS, SETTLE
from gateway.stores.resp import RespClient

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
