"""The blocking rules in force, from every source, and what a match does besides refusing.

Sources: ``[[gateway.blocking.rules]]`` in TOML (a rule with ``endpoint_id`` is that endpoint's),
Redis ``blocking_rules:global`` and ``blocking_rules:endpoint:{endpoint_id}`` (JSON arrays), and the
client-facing reasons ``blocking_rule_reason:{rule_name}``. Each change recompiles only the set it
touches; a source that cannot be read keeps its last good rules.

Rate-based rules count per client IP in Redis (one pipelined round trip for every rate rule that
applies; in-process while Redis fails or is absent). A match bumps ``gateway:rule_stats:{rule_id}``
(written one way, nothing waits for it) and is kept on the request's outcome for its analytics rows.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Mapping

import redis
import ujson

from gateway.guard.rules import Match, Rule, RuleSet, parse_rule, parse_rules
from gateway.logs import Throttled
from gateway.stores.resp import OneWay, RespClient

__all__ = ["BlockingRules", "GLOBAL", "parse_json"]

log = logging.getLogger(__name__)

GLOBAL = "global"
_STATS_TTL_S = 86_400
#: Client addresses counted in-process at most (while Redis is away).
_LOCAL_COUNTS = 100_000
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class BlockingRules:
    def __init__(self, toml_rules: Iterable[Mapping], client: RespClient | None) -> None:
        self._client = client
        self._oneway = OneWay(client) if client is not None else None
        #: source ("toml", "redis") -> scope (GLOBAL or an endpoint id) -> rules
        self._sources: dict[str, dict[str, list[Rule]]] = {"toml": {}, "redis": {}}
        for i, raw in enumerate(toml_rules):
            rule = parse_rule(raw, f"gateway.blocking.rules[{i}]")
            if rule is not None:
                self._sources["toml"].setdefault(str(raw.get("endpoint_id") or GLOBAL), []).append(rule)
        self.reasons: dict[str, str] = {}
        self._sets: dict[str, RuleSet] = {}
        self._local_counts: dict[str, list[float]] = {}
        self._warn = Throttled(log)
        self._compile({*self._sources["toml"], GLOBAL})

    def _compile(self, scopes: Iterable[str]) -> None:
        for scope in scopes:
            rules = [r for source in self._sources.values() for r in source.get(scope, ())]
            if rules:
                self._sets[scope] = RuleSet(rules)
            else:
                self._sets.pop(scope, None)

    # -- written by the Redis sync -----------------------------------------------------------------

    def replace_redis(self, by_scope: Mapping[str, list[Rule]], unreadable: Iterable[str] = ()) -> None:
        """A full load: ``by_scope`` replaces every Redis source, but an ``unreadable`` one keeps its
        last good rules."""
        old = self._sources["redis"]
        fresh = dict(by_scope)
        for scope in unreadable:
            if scope in old:
                fresh[scope] = old[scope]
        self._sources["redis"] = fresh
        self._compile(set(old) | set(fresh) | {GLOBAL})

    def set_redis(self, scope: str, raw: bytes | None, where: str) -> None:
        """A source changed: ``raw`` its new JSON (None: it is gone). Unreadable JSON keeps the last rules."""
        if raw is None:
            self._sources["redis"].pop(scope, None)
        else:
            rules = parse_json(raw, where)
            if rules is None:
                return
            self._sources["redis"][scope] = rules
        self._compile([scope])

    # -- the request path --------------------------------------------------------------------------

    def for_scope(self, scope: str) -> RuleSet | None:
        return self._sets.get(scope)

    def rate_matches(self, rules: list[Rule], client_ip: str) -> list[Match]:
        """The rate rules this request takes over their threshold (each counts it)."""
        if not rules:
            return []
        keys = [f"blk:{{{rule.id}|{client_ip}}}" for rule in rules]
        counts = None
        if self._client is not None:
            try:
                counts = self._client.pipeline([("EVAL", _COUNT, 1, key, rule.window_s * 1000)
                                                for key, rule in zip(keys, rules, strict=True)])
                if any(isinstance(c, Exception) for c in counts):
                    raise next(c for c in counts if isinstance(c, Exception))
            except (redis.RedisError, OSError) as e:
                self._warn.warning("blocking: redis could not count rate rules (%s); counting in-process", type(e).__name__)
                counts = None
        if counts is None:
            counts = [self._count_locally(key, rule.window_s) for key, rule in zip(keys, rules, strict=True)]
        return [Match(rule, f"Too many requests from {client_ip}")
                for rule, count in zip(rules, counts, strict=True) if count > rule.threshold]

    def _count_locally(self, key: str, window_s: int) -> int:
        now = time.monotonic()
        counts = self._local_counts
        entry = counts.get(key)
        if entry is None or entry[0] <= now:
            counts.pop(key, None)
            while len(counts) >= _LOCAL_COUNTS:
                del counts[next(iter(counts))]  # the oldest window: a bounded table, however many IPs come
            entry = counts[key] = [now + window_s, 0]
        entry[1] += 1
        return entry[1]

    def matched(self, match: Match) -> None:
        """A rule matched: its stats hash in Redis (match_count, last_matched), kept a day."""
        if self._oneway is None:
            return
        key = f"gateway:rule_stats:{match.rule.id}"
        now = datetime.datetime.now(datetime.UTC).isoformat()
        try:
            self._oneway.send([("HINCRBY", key, "match_count", 1), ("HSET", key, "last_matched", now),
                               ("EXPIRE", key, _STATS_TTL_S)])
        except (redis.RedisError, OSError) as e:
            self._warn.warning("blocking: could not write rule stats (%s)", type(e).__name__)


    def close(self) -> None:
        if self._oneway is not None:
            self._oneway.close()


def parse_json(raw: bytes | str, where: str) -> list[Rule] | None:
    """The rules of one Redis source; None (logged) when it is not JSON at all."""
    try:
        data = ujson.loads(raw)
    except ValueError:
        log.warning("%s: not JSON; the last rules read from it stay in force", where)
        return None
    return parse_rules(data, where)
