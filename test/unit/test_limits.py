"""Limits without sockets: their config, the plans made of it, TensorZero's rule matching, the
in-process limiter's algorithms on a controlled clock, headers, quota decisions, published overrides."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config_text
from gateway.config.schema import RateLimitingConfig, RateLimits, RateLimitSettings
from gateway.limits import local
from gateway.limits.headers import duration, limit_headers, retry_headers
from gateway.limits.limiter import Admission
from gateway.limits.local import LocalLimiter
from gateway.limits.overrides import RateLimitOverrides
from gateway.limits.plan import Check, Limit, model_plan, rule_checks, scope_of, token_estimate
from gateway.limits.quotas import UsageTable, decide
from providers.registry import build_registry

REGISTRY = build_registry()
MODEL = """
[models.m]
routing = ["d"]
[models.m.providers.d]
type = "dummy"
model_name = "text"
"""


def load(text: str):
    return load_config_text(text, "t.toml", REGISTRY)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.errors


class TestConfig:
    def test_model_limits_and_gateway_settings_are_read(self):
        config = load(MODEL + """
[models.m.rate_limits]
algorithm = "token_bucket"
requests_per_second = 5
burst_size = 20
tokens_per_hour = 1000
max_concurrent_requests = 3

[gateway.rate_limits]
default_requests_per_minute = 60
fail_open = false
redis_timeout_ms = 50

[gateway.usage_limits]
enabled = false
""".replace("[gateway.rate_limits]", "[gateway.rate_limits]", 1))
        limits = config.models["m"].rate_limits
        assert (limits.algorithm, limits.requests_per_second, limits.burst_size) == ("token_bucket", 5, 20)
        assert (limits.tokens_per_hour, limits.max_concurrent_requests, limits.enabled) == (1000, 3, True)
        settings = config.gateway.rate_limits
        assert (settings.default_requests_per_minute, settings.fail_open, settings.redis_timeout_ms) == (60, False, 50)
        assert config.gateway.usage_limits.enabled is False

    def test_bad_limits_name_their_key(self):
        errors = errors_of(MODEL + """
[models.m.rate_limits]
algorithm = "leaky"
requests_per_minute = 0
tokens_per_day = 5
""")
        assert 'models.m.rate_limits.algorithm: unknown algorithm "leaky" (one of: sliding_window, fixed_window, ' \
               'token_bucket)' in errors
        assert "models.m.rate_limits.requests_per_minute: must be > 0, got 0" in errors
        assert "models.m.rate_limits.tokens_per_day: unknown key" in errors

    def test_tensorzero_rules_are_read(self):
        config = load(MODEL + """
[rate_limiting]
default_cost = 0.5

[[rate_limiting.rules]]
always = true
model_inferences_per_hour = 1_000
tokens_per_minute = { capacity = 100, refill_rate = 10 }

[[rate_limiting.rules]]
priority = 1
cost_per_day = 2.5
scope = [{ tag_key = "user_id", tag_value = "tensorzero::each" }, { api_key_public_id = "abc" }]
""")
        first, second = config.rate_limiting.rules
        assert config.rate_limiting.default_cost == 0.5
        assert first.always and [(r.resource, r.window_s, r.capacity, r.refill_rate) for r in first.limits] == [
            ("model_inferences", 3600, 1000, 1000), ("tokens", 60, 100, 10)]
        assert (second.priority, second.limits[0].resource, second.limits[0].capacity) == (1, "cost", 2.5)
        assert [(s.tag_key, s.value) for s in second.scope] == [("user_id", "tensorzero::each"), (None, "abc")]
        assert first.digest != second.digest

    def test_tensorzero_rule_errors(self):
        errors = errors_of(MODEL + """
[[rate_limiting.rules]]
model_inferences_per_minute = 1

[[rate_limiting.rules]]
always = true
priority = 2
tokens_per_fortnight = 5

[[rate_limiting.rules]]
priority = 0
model_inferences_per_minute = 1.5
scope = [{ api_key_public_id = "tensorzero::total" }]
""")
        assert "rate_limiting.rules[0].priority: missing (an integer; or set always = true)" in errors
        assert "rate_limiting.rules[1].priority: cannot be set together with always = true" in errors
        assert "rate_limiting.rules[1].tokens_per_fortnight: unknown key" in errors
        assert any(e.startswith("rate_limiting.rules[2].model_inferences_per_minute: expected an integer") for e in errors)
        assert any("tensorzero::total is not supported for API keys" in e for e in errors)


class TestPlans:
    def test_a_model_without_limits_takes_the_defaults(self):
        assert model_plan(None, RateLimitSettings()) is None
        plan = model_plan(None, RateLimitSettings(default_requests_per_minute=7, default_algorithm="fixed_window"))
        assert plan.algorithm == "fixed_window"
        assert [(lim.kind, lim.window_ms, lim.capacity) for lim in plan.limits] == [("requests", 60_000, 7)]

    def test_disabled_limits_are_no_plan(self):
        assert model_plan(RateLimits(requests_per_minute=5, enabled=False), RateLimitSettings()) is None
        assert model_plan(RateLimits(requests_per_minute=5), RateLimitSettings(enabled=False)) is None

    def test_every_limit_is_in_the_plan(self):
        plan = model_plan(RateLimits(algorithm="token_bucket", requests_per_second=2, requests_per_hour=100,
                                     tokens_per_minute=500, burst_size=10, max_concurrent_requests=4),
                          RateLimitSettings())
        assert [(lim.kind, lim.window_ms, lim.capacity, lim.refill) for lim in plan.limits] == [
            ("requests", 1000, 10, 2), ("requests", 3_600_000, 10, 100), ("tokens", 60_000, 500, 500)]
        assert plan.max_concurrent == 4

    def test_scope_and_estimate(self):
        assert scope_of("key-1", "raw", "10.0.0.1") == "k:key-1"
        assert scope_of(None, "raw", "10.0.0.1").startswith("r:") and "raw" not in scope_of(None, "raw", "")
        assert scope_of(None, None, "10.0.0.1") == "ip:10.0.0.1"
        assert token_estimate({"max_tokens": 100}, 400) == 200
        assert token_estimate({"max_completion_tokens": 50, "max_tokens": 100}, 0) == 50
        assert token_estimate({"max_tokens": True}, 8) == 2

    def test_the_highest_matching_priority_and_every_always_rule_apply(self):
        config = load(MODEL + """
[[rate_limiting.rules]]
priority = 0
model_inferences_per_minute = 1
scope = [{ tag_key = "user_id", tag_value = "tensorzero::each" }]

[[rate_limiting.rules]]
priority = 1
model_inferences_per_minute = 5
scope = [{ tag_key = "user_id", tag_value = "ceo" }]

[[rate_limiting.rules]]
always = true
tokens_per_hour = 1000
""").rate_limiting
        ceo = rule_checks(config, {"user_id": "ceo"}, None, 10)
        assert [c.limits[0].capacity for c in ceo] == [5, 1000]
        intern = rule_checks(config, {"user_id": "intern"}, None, 10)
        assert [c.limits[0].capacity for c in intern] == [1, 1000]
        assert intern[1].costs == [10]
        assert [c.limits[0].capacity for c in rule_checks(config, {}, None, 10)] == [1000]
        other = rule_checks(config, {"user_id": "other"}, None, 10)
        assert other[0].keys != intern[0].keys, "tensorzero::each counts each value apart"
        assert rule_checks(RateLimitingConfig(enabled=False, rules=config.rules), {}, None, 1) == []

    def test_total_counts_every_value_together(self):
        config = load(MODEL + """
[[rate_limiting.rules]]
priority = 0
model_inferences_per_minute = 1
scope = [{ tag_key = "team", tag_value = "tensorzero::total" }]
""").rate_limiting
        a, b = (rule_checks(config, {"team": team}, None, 1)[0] for team in ("a", "b"))
        assert a.keys == b.keys
        for key in a.keys:
            assert key.count("{") == 1 and key.index("}") > key.index("{"), "one hash tag per key"


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_000_000_000]
    monkeypatch.setattr(local, "_now_ms", lambda: now[0])
    return now


def check(algorithm: str, *limits: Limit, costs=None, lease_max: int = 0) -> Check:
    return Check(algorithm, algorithm[:2], "m=x|k:1", limits, costs or [1] * len(limits), lease_max)


class TestLocalLimiter:
    @pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket"])
    def test_exactly_the_limit_is_admitted(self, clock, algorithm):
        limiter = LocalLimiter()
        answers = [limiter.check(check(algorithm, Limit("requests", 60, 5)), f"r{i}") for i in range(8)]
        assert [a[0] for a in answers] == [1] * 5 + [0] * 3
        assert [a[4] for a in answers[:5]] == [4, 3, 2, 1, 0]
        assert all(a[2] >= 1 for a in answers[5:])

    def test_a_fixed_window_opens_again_after_its_length(self, clock):
        limiter = LocalLimiter()
        c = check("fixed_window", Limit("requests", 1, 1))
        assert limiter.check(c, "a")[0] == 1
        denied = limiter.check(c, "b")
        assert denied[0] == 0 and denied[2] == 1000
        clock[0] += 1000
        assert limiter.check(c, "c")[0] == 1

    def test_a_sliding_window_weighs_the_previous_window(self, clock):
        limiter = LocalLimiter()
        clock[0] = 60_000 * 1000  # the start of a window
        c = check("sliding_window", Limit("requests", 60, 10))
        assert all(limiter.check(c, str(i))[0] for i in range(10))
        clock[0] += 60_000 + 30_000  # half into the next window: half of the previous one still counts
        admitted = sum(limiter.check(c, f"n{i}")[0] for i in range(10))
        assert admitted == 5

    def test_a_bucket_refills_continuously_or_in_steps(self, clock):
        limiter = LocalLimiter()
        smooth = check("token_bucket", Limit("requests", 60, 2, 60))  # one a second, bursts of 2
        assert [limiter.check(smooth, str(i))[0] for i in range(3)] == [1, 1, 0]
        clock[0] += 1000
        assert limiter.check(smooth, "x")[0] == 1
        stepped = Check("token_bucket", "tz", "r=1|2", (Limit("requests", 60, 2, 1, 60),), [1])
        assert [limiter.check(stepped, str(i))[0] for i in range(3)] == [1, 1, 0]
        clock[0] += 59_000
        assert limiter.check(stepped, "y")[0] == 0, "a stepped bucket refills only at the window's end"
        clock[0] += 1000
        assert limiter.check(stepped, "z")[0] == 1

    def test_tokens_admit_while_any_remain_and_settle_to_the_real_use(self, clock):
        limiter = LocalLimiter()
        tokens = Limit("tokens", 60, 100)
        c = check("fixed_window", tokens, costs=[80])
        first = limiter.check(c, "a")
        assert first[0] == 1 and first[4] == 20
        assert limiter.check(c, "b")[0] == 1, "20 tokens were left: admitted, and now over"
        assert limiter.check(c, "c")[0] == 0
        limiter.settle([(c.keys[0], "f", -150, first[6], tokens)])  # both used 5 instead of 80
        assert limiter.check(c, "d")[0] == 1

    def test_a_refund_never_fills_a_bucket_past_its_size(self, clock):
        limiter = LocalLimiter()
        daily = Limit("tokens", 86_400, 1000, 1000, 86_400)
        c = Check("token_bucket", "tz", "r=d|1", (daily,), [400])
        limiter.check(c, "a")
        limiter.settle([(c.keys[0], "b", -900, 0, daily)])
        assert limiter.check(c, "b")[4] == 600, "1000 at most, less the 400 just reserved"

    def test_leases(self, clock):
        limiter = LocalLimiter()
        c = check("fixed_window", Limit("requests", 60, 100), lease_max=2)
        assert [limiter.check(c, m)[0] for m in ("a", "b", "c")] == [1, 1, 0]
        assert limiter.check(c, "c")[1] == 2
        limiter.release(c.lease_key, "a")
        assert limiter.check(c, "c")[0] == 1


class TestHeaders:
    def test_duration(self):
        assert [duration(ms) for ms in (20, 1500, 60_000, 3_661_000)] == ["20ms", "1.5s", "1m0s", "1h1m1s"]

    def test_the_tightest_limit_of_each_kind_is_shown(self):
        limits = (Limit("requests", 1, 10), Limit("requests", 60, 100), Limit("tokens", 60, 1000))
        c = check("fixed_window", *limits)
        admission = Admission([c], [[1, 0, 0, -1, 9, 500, 0, 5, 30_000, 0, 900, 30_000, 0]], False, "m")
        headers = limit_headers(admission)
        assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("100", "5")
        assert headers["x-ratelimit-reset-requests"] == "30s"
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("100", "5")
        assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == ("1000", "900")
        refused = Admission([c], [[0, 1, 1200, -1, 0, 500, 0, 5, 30_000, 0, 900, 30_000, 0]], False, "m")
        retry = retry_headers(refused)
        assert (retry["Retry-After"], retry["retry-after-ms"]) == ("2", "1200")


class TestQuotas:
    @pytest.mark.parametrize(("entry", "refusal"), [
        ({"user_type": "client", "allowed": True, "tokens_quota": None, "tokens_used": 10**9}, None),
        ({"user_type": "client", "allowed": False, "reason": "billing suspended"}, "billing suspended"),
        ({"user_type": "client", "allowed": False}, "usage is not allowed"),
        ({"user_type": "client", "allowed": True, "tokens_quota": 100, "tokens_used": 100}, "token quota of 100 reached"),
        ({"user_type": "client", "allowed": True, "cost_quota": 2.5, "cost_used": 3.0}, "cost quota of 2.5 reached"),
        ({"user_type": "admin", "allowed": False, "tokens_quota": 1, "tokens_used": 5}, None),
        ({"user_type": "client", "allowed": True, "tokens_quota": 100, "tokens_used": 99}, None),
    ])
    def test_decisions(self, entry, refusal):
        assert decide(entry) == refusal

    def test_the_table(self):
        table = UsageTable()
        table.replace_all({"u1": b'{"allowed": false, "reason": "no"}', "u2": b'{"allowed": true}', "bad": b"[1]"})
        assert (table.refusal("u1"), table.refusal("u2"), table.has("u2"), table.has("bad")) == ("no", None, True, False)
        table.put("u2", '{"allowed": true, "tokens_quota": 1, "tokens_used": 1}')
        assert table.refusal("u2") == "token quota of 1 reached"
        table.remove("u2")
        assert (table.refusal("u2"), table.has("u2")) == (None, False)


class TestOverrides:
    def test_messages(self, caplog):
        overrides = RateLimitOverrides()
        own = RateLimits(requests_per_minute=5)
        assert overrides.get(("m",), own) is own
        overrides.message("m", b'{"action": "create", "config": {"requests_per_minute": 2, "tokens_per_minute": null}}')
        assert overrides.get(("m",), own).requests_per_minute == 2
        overrides.message("m", b'{"action": "delete", "config": null}')
        assert overrides.get(("m",), own) is None
        overrides.message("m", b'{"action": "update", "config": {"requests_per_minute": -1}}')
        assert overrides.get(("m",), own) is None and "must be > 0" in caplog.text
        assert overrides.get(("endpoint-1", "m"), own) is None, "the client's name for the model"
        overrides.model_changed("m")
        assert overrides.get(("m",), own) is own
