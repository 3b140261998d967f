"""Usage quotas from budapp's ``usage_limit:{user_id}`` entries, through two gateways of two workers on
one Redis: each rule that refuses (402), those that let through, live changes, consumption added to
the entry by both gateways until the quota is reached, the clear key, and quotas turned off.

The keys, and the entries of the rules' users, are written before the gateways start, so every worker
has them from its first full load: a request that passes then proves the rule lets it through.
"""

from __future__ import annotations

import datetime
import json
import math
import uuid

import anthropic
import openai
import pytest
from budapp import grant, new_raw_key
from configs import model_toml, openai_provider
from conftest import CLIENT_TIMEOUT_S
from upstream import USAGE

from .polling import CHANGE_VISIBLE_S, INITIAL_LOAD_TIMEOUT_S, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
MODEL = "metered"
WORKERS = 2
PRICING = {"input_cost": 2.0, "output_cost": 4.0, "per_tokens": 1000, "currency": "USD"}
TOKENS_PER_REQUEST = USAGE["prompt_tokens"] + USAGE["completion_tokens"]
COST_PER_REQUEST = (USAGE["prompt_tokens"] * PRICING["input_cost"]
                    + USAGE["completion_tokens"] * PRICING["output_cost"]) / PRICING["per_tokens"]
#: The consuming user's token quota: reached by the fourth request.
QUOTA = 35
CONSUMING_REQUESTS = math.ceil(QUOTA / TOKENS_PER_REQUEST)
ENTRY_TTL_S = 3600
PREFIX, CLEAR_PREFIX = "usage_limit:", "usage_limit_clear:"
QUOTA_ERROR = {"type": "insufficient_quota", "param": None, "code": "insufficient_quota"}

_NOW = datetime.datetime.now(datetime.timezone.utc)


def usage_entry(user_id: str, **fields) -> dict:
    """A ``usage_limit:{user_id}`` value as budapp writes it: an allowed client with no quota, used nothing."""
    cycle_end = _NOW + datetime.timedelta(days=30)
    return {
        "user_id": user_id, "user_type": "client", "allowed": True, "status": "active",
        "tokens_quota": None, "tokens_used": 0, "cost_quota": None, "cost_used": 0.0, "reason": None,
        "reset_at": cycle_end.isoformat(), "billing_cycle_start": _NOW.isoformat(),
        "billing_cycle_end": cycle_end.isoformat(), "last_updated": _NOW.isoformat(), **fields,
    }


class _User:
    """A user with one API key granting the metered model; ``entry`` is written before the gateways start."""

    def __init__(self, entry: dict | None = None, ttl_s: int | None = None) -> None:
        self.raw_key = new_raw_key()
        self.id = f"user-{uuid.uuid4()}"
        self.entry = None if entry is None else usage_entry(self.id, **entry)
        self.ttl_s = ttl_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw_key}"}


#: name -> (the entry's fields, the status it gets, the 402's message).
RULES = {
    "not-allowed-with-reason": ({"allowed": False, "status": "suspended", "reason": "Payment overdue"},
                                402, "Usage quota exceeded: Payment overdue"),
    "tokens-at-quota": ({"tokens_quota": 100, "tokens_used": 100}, 402,
                        "Usage quota exceeded: token quota of 100 reached"),
    "tokens-over-quota": ({"tokens_quota": 100, "tokens_used": 250}, 402,
                          "Usage quota exceeded: token quota of 100 reached"),
    "tokens-at-quota-with-reason": ({"tokens_quota": 100, "tokens_used": 100, "reason": "Monthly tokens spent"},
                                    402, "Usage quota exceeded: Monthly tokens spent"),
    "cost-at-quota": ({"cost_quota": 2.5, "cost_used": 2.5}, 402, "Usage quota exceeded: cost quota of 2.5 reached"),
    "cost-over-quota": ({"cost_quota": 2.5, "cost_used": 7.25}, 402,
                        "Usage quota exceeded: cost quota of 2.5 reached"),
    "tokens-below-quota": ({"tokens_quota": 100, "tokens_used": 99}, 200, None),
    "cost-below-quota": ({"cost_quota": 2.5, "cost_used": 2.49}, 200, None),
    "null-quotas-are-unlimited": ({"tokens_quota": None, "cost_quota": None, "tokens_used": 10**12,
                                   "cost_used": 1e9}, 200, None),
    "admin-over-every-quota": ({"user_type": "admin", "allowed": False, "reason": "ignored for admins",
                                "tokens_quota": 1, "tokens_used": 5, "cost_quota": 0.1, "cost_used": 3.0}, 200, None),
}


class _Users:
    def __init__(self) -> None:
        self.rules = {name: _User(fields) for name, (fields, _, _) in RULES.items()}
        self.no_entry = _User()
        self.not_allowed_without_reason = _User({"allowed": False})
        self.refused = _User({"allowed": False, "reason": "Account on hold"})
        self.live_refused = _User()
        self.live_allowed = _User({"allowed": False, "reason": "Not yet"})
        self.live_deleted = _User({"allowed": False, "reason": "Not yet"})
        self.consuming = _User({"tokens_quota": QUOTA}, ttl_s=ENTRY_TTL_S)
        self.cleared = _User({"tokens_quota": 10, "tokens_used": 10, "reason": "Cycle spent"})

    def all(self) -> list[_User]:
        return [*self.rules.values(), *(u for u in vars(self).values() if isinstance(u, _User))]


@pytest.fixture(scope="module")
def redis_client(redis_server):
    return redis_server.client(0)


def _put_entry(redis_client, user: _User, entry: dict, ttl_s: int | None = None) -> None:
    redis_client.set(PREFIX + user.id, json.dumps(entry), ex=ttl_s)


def _entry(redis_client, user: _User) -> dict:
    return json.loads(redis_client.get(PREFIX + user.id))


@pytest.fixture(scope="module")
def users(redis_server, budapp_factory, redis_client) -> _Users:
    writer = budapp_factory(redis_server, 0)
    made = _Users()
    for user in made.all():
        metadata = {"api_key_id": str(uuid.uuid4()), "user_id": user.id, "api_key_project_id": "project-test"}
        writer.put_key(user.raw_key, {MODEL: grant(MODEL)}, metadata=metadata)
        if user.entry is not None:
            _put_entry(redis_client, user, user.entry, user.ttl_s)
    return made


def _models(api: str) -> str:
    return model_toml(MODEL, {"p": openai_provider("ok", api)}, pricing=PRICING)


def _wait_workers_loaded(gw, workers: int) -> None:
    """Until every worker has logged its first full load from Redis (each worker loads on its own)."""
    loaded = wait_until(lambda: gw.log().count(" from redis in ") >= workers, INITIAL_LOAD_TIMEOUT_S)
    assert loaded is not None, f"not every worker loaded from redis in {INITIAL_LOAD_TIMEOUT_S} s:\n{gw.log()}"


@pytest.fixture(scope="module")
def gws(module_gateway_factory, redis_server, users, upstream, store_env):
    """Two gateways on the same Redis database."""
    env = store_env(redis_server.url(0))
    started = [module_gateway_factory(_models(upstream.url), settings={"workers": WORKERS}, env=env)
               for _ in range(2)]
    for gw in started:
        _wait_workers_loaded(gw, WORKERS)
    return started


def _chat(gw, user: _User):
    return gw.request("POST", "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES}, headers=user.headers)


def _within(timeout: float, predicate) -> None:
    assert wait_until(predicate, timeout) is not None, f"not so within {timeout} s"


class TestRules:
    @pytest.mark.parametrize("name", list(RULES))
    def test_entry_decides_the_status(self, gws, users, name):
        _, status, message = RULES[name]
        # An answered request adds its usage, which may spend a quota that was nearly spent: once is enough.
        for gw in gws if status == 402 else gws[:1]:
            resp = _chat(gw, users.rules[name])
            assert resp.status == status, resp
            if message is not None:
                assert resp.json()["error"]["message"] == message

    def test_user_without_an_entry_has_no_quota(self, gws, users):
        assert [_chat(gw, users.no_entry).status for gw in gws] == [200, 200]

    def test_not_allowed_without_a_reason_still_says_the_quota_refused(self, gws, users):
        resp = _chat(gws[0], users.not_allowed_without_reason)
        assert resp.status == 402, resp
        assert resp.json()["error"]["message"].startswith("Usage quota exceeded: ")

    def test_refusal_body_is_openai_shaped(self, gws, users):
        resp = _chat(gws[0], users.refused)
        assert (resp.status, resp.json()) == (402, {"error": {"message": "Usage quota exceeded: Account on hold",
                                                              **QUOTA_ERROR}})

    def test_refused_request_never_reaches_the_upstream(self, gws, users, upstream):
        assert _chat(gws[0], users.refused).status == 402
        assert upstream.requests == []

    def test_sdk_gets_a_402_status_error(self, gws, users, sdk):
        with pytest.raises(openai.APIStatusError) as exc:
            sdk(gws[1], users.refused.raw_key).chat.completions.create(model=MODEL, messages=MESSAGES)
        assert exc.value.status_code == 402
        assert exc.value.body == {"message": "Usage quota exceeded: Account on hold", **QUOTA_ERROR}

    def test_messages_route_refuses_in_anthropics_shape(self, gws, users):
        body = {"model": MODEL, "max_tokens": 16, "messages": MESSAGES}
        resp = gws[0].request("POST", "/v1/messages", body, headers={"x-api-key": users.refused.raw_key})
        assert (resp.status, resp.json()) == (402, {"type": "error", "error": {
            "type": "billing_error", "message": "Usage quota exceeded: Account on hold"}})

    def test_anthropic_sdk_gets_the_402(self, gws, users):
        http_client = anthropic.DefaultHttpxClient(trust_env=False)
        with anthropic.Anthropic(base_url=gws[1].base_url, api_key=users.refused.raw_key, max_retries=0,
                                 timeout=CLIENT_TIMEOUT_S, http_client=http_client) as client:
            with pytest.raises(anthropic.APIStatusError) as exc:
                client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
        assert exc.value.status_code == 402
        assert exc.value.body["error"]["type"] == "billing_error"

    def test_refusal_is_counted(self, gws, users):
        def denials() -> float:
            return gws[0].metric_total("budgateway_limit_denials_total", model=MODEL, code="insufficient_quota")

        before = denials()
        assert _chat(gws[0], users.refused).status == 402
        assert denials() == before + 1


class TestLiveChanges:
    def test_refusing_entry_applies_within_a_second(self, gws, users, redis_client):
        user = users.live_refused
        assert [_chat(gw, user).status for gw in gws] == [200, 200]
        _put_entry(redis_client, user, usage_entry(user.id, allowed=False, reason="Suspended"))
        for gw in gws:
            _within(CHANGE_VISIBLE_S, lambda gw=gw: _chat(gw, user).status == 402)

    def test_allowing_entry_applies_within_a_second(self, gws, users, redis_client):
        user = users.live_allowed
        assert [_chat(gw, user).status for gw in gws] == [402, 402]
        _put_entry(redis_client, user, usage_entry(user.id, allowed=True))
        for gw in gws:
            _within(CHANGE_VISIBLE_S, lambda gw=gw: _chat(gw, user).status == 200)

    def test_deleted_entry_lets_the_user_through_within_a_second(self, gws, users, redis_client):
        user = users.live_deleted
        assert [_chat(gw, user).status for gw in gws] == [402, 402]
        redis_client.delete(PREFIX + user.id)
        for gw in gws:
            _within(CHANGE_VISIBLE_S, lambda gw=gw: _chat(gw, user).status == 200)


class _Consumption:
    """What the consuming user's requests did: the entry after each, and the answers once it was spent."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.entries: list[dict] = []


@pytest.fixture(scope="class")
def consumption(gws, users, redis_client) -> _Consumption:
    """The consuming user's requests, alternately through both gateways, each until Redis has its usage."""
    user, seen = users.consuming, _Consumption()
    for i in range(CONSUMING_REQUESTS):
        seen.statuses.append(_chat(gws[i % 2], user).status)
        want = TOKENS_PER_REQUEST * (i + 1)
        wait_until(lambda want=want: _entry(redis_client, user)["tokens_used"] >= want, CHANGE_VISIBLE_S)
        seen.entries.append(_entry(redis_client, user))
    return seen


class TestConsumption:
    def test_every_request_before_the_quota_is_reached_passes(self, consumption):
        assert consumption.statuses == [200] * CONSUMING_REQUESTS

    def test_tokens_used_grows_by_each_requests_usage(self, consumption):
        used = [e["tokens_used"] for e in consumption.entries]
        assert used == [TOKENS_PER_REQUEST * (i + 1) for i in range(CONSUMING_REQUESTS)]

    def test_cost_used_grows_by_the_models_pricing(self, consumption):
        used = [e["cost_used"] for e in consumption.entries]
        assert used == pytest.approx([COST_PER_REQUEST * (i + 1) for i in range(CONSUMING_REQUESTS)])

    def test_the_rest_of_the_entry_is_kept(self, consumption, users):
        kept = {k: v for k, v in consumption.entries[-1].items()
                if k not in ("tokens_used", "cost_used", "last_updated")}
        expected = {k: v for k, v in users.consuming.entry.items()
                    if k not in ("tokens_used", "cost_used", "last_updated")}
        assert kept == expected

    def test_both_gateways_refuse_once_the_quota_is_reached(self, consumption, gws, users):
        message = f"Usage quota exceeded: token quota of {QUOTA} reached"
        for gw in gws:
            _within(CHANGE_VISIBLE_S, lambda gw=gw: _chat(gw, users.consuming).status == 402)
            assert _chat(gw, users.consuming).json()["error"]["message"] == message

    def test_the_entrys_ttl_is_kept(self, consumption, users, redis_client):
        ttl = redis_client.ttl(PREFIX + users.consuming.id)
        assert 0 < ttl <= ENTRY_TTL_S


class TestClear:
    def test_a_cycle_reset_lets_the_user_through_and_its_clear_key_is_deleted(self, gws, users, redis_client):
        """budapp's reset: the new cycle's entry first, then the clear key."""
        user = users.cleared
        assert [_chat(gw, user).status for gw in gws] == [402, 402]
        _put_entry(redis_client, user, usage_entry(user.id, tokens_quota=1000, tokens_used=0))
        redis_client.set(CLEAR_PREFIX + user.id, "1", ex=10)
        for gw in gws:
            _within(CHANGE_VISIBLE_S, lambda gw=gw: _chat(gw, user).status == 200)
        _within(CHANGE_VISIBLE_S, lambda: not redis_client.exists(CLEAR_PREFIX + user.id))
        # The new cycle's entry is still metered after the clear.
        _within(CHANGE_VISIBLE_S, lambda: _entry(redis_client, user)["tokens_used"] > 0)


@pytest.fixture(scope="module")
def unmetered(module_gateway_factory, redis_server, users, upstream, store_env):
    """A third gateway on the same Redis, with ``[gateway.usage_limits] enabled = false``."""
    gw = module_gateway_factory(_models(upstream.url), settings={"usage_limits": {"enabled": False}},
                                env=store_env(redis_server.url(0)))
    _wait_workers_loaded(gw, 1)
    return gw


class TestQuotasTurnedOff:
    @pytest.mark.parametrize("name", ["not-allowed-with-reason", "tokens-over-quota", "cost-at-quota"])
    def test_no_entry_refuses(self, unmetered, users, name):
        assert _chat(unmetered, users.rules[name]).status == 200
