"""Per-user usage quotas: budapp's ``usage_limit:{user_id}`` entries as in-memory decisions, and the
consumption of each request added to them in Redis.

An entry (JSON): ``user_id``, ``user_type`` (admin | client), ``allowed``, ``status``, ``tokens_quota``
and ``cost_quota`` (null: unlimited), ``tokens_used``, ``cost_used``, ``reason``, ``reset_at``,
``billing_cycle_start``, ``billing_cycle_end``, ``last_updated``. An admin always passes; anyone else
is refused when not ``allowed`` or a quota is used up. A user without an entry has no quota.

Consumption runs off the request path: the finish hook adds the request's tokens and cost to the
user's pending total, and a background greenlet sends each user's total with one atomic script
(which keeps the key's TTL). The new entry comes back and is applied at once; the keyspace
notification brings it to every other gateway. Totals Redis cannot take wait and are sent later.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import gevent
import gevent.event
import redis
import ujson

from gateway.limits.plan import used
from gateway.limits.scripts import Script, pipelined
from gateway.outcome import Outcome
from gateway.stores.resp import RespClient

__all__ = ["UsageConsumer", "UsageTable"]

log = logging.getLogger(__name__)

_CONSUME = Script("consume_usage", """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, data = pcall(cjson.decode, raw)
if not ok or type(data) ~= 'table' then return false end
data['tokens_used'] = (tonumber(data['tokens_used']) or 0) + tonumber(ARGV[1])
data['cost_used'] = (tonumber(data['cost_used']) or 0) + tonumber(ARGV[2])
data['last_updated'] = ARGV[3]
local out = cjson.encode(data)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[1], out, 'PX', ttl) else redis.call('SET', KEYS[1], out) end
return out
""")
PREFIX = "usage_limit:"
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.5, 30.0


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def decide(data: Mapping[str, Any]) -> str | None:
    """Why an entry refuses its user, or None when it lets them through."""
    if data.get("user_type") == "admin":
        return None
    reason = data.get("reason") if isinstance(data.get("reason"), str) and data.get("reason") else None
    if data.get("allowed") is False:
        return reason or "usage is not allowed"
    for kind in ("tokens", "cost"):
        quota, used = _number(data.get(f"{kind}_quota")), _number(data.get(f"{kind}_used")) or 0
        if quota is not None and used >= quota:
            return reason or f"{'token' if kind == 'tokens' else 'cost'} quota of {quota:g} reached"
    return None


class UsageTable:
    """Users with an entry, and the reason of each one refused (written by the Redis sync)."""

    def __init__(self) -> None:
        self._users: set[str] = set()
        self._refused: dict[str, str] = {}
        #: Set once a full load has succeeded.
        self.loaded = False

    def refusal(self, user_id: str) -> str | None:
        return self._refused.get(user_id)

    def has(self, user_id: str) -> bool:
        return user_id in self._users

    @staticmethod
    def parse(user_id: str, raw: bytes | str) -> str | None | bool:
        """The refusal reason of an entry (None: allowed); False when it does not parse (logged)."""
        try:
            data = ujson.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            log.warning("%s%s: not a JSON object; the user has no quota until it is rewritten", PREFIX, user_id)
            return False
        return decide(data)

    def put(self, user_id: str, raw: bytes | str) -> None:
        reason = self.parse(user_id, raw)
        if reason is False:
            self.remove(user_id)
            return
        self._users.add(user_id)
        if reason is None:
            self._refused.pop(user_id, None)
        else:
            self._refused[user_id] = reason

    def remove(self, user_id: str) -> None:
        self._users.discard(user_id)
        self._refused.pop(user_id, None)

    def replace_all(self, entries: Mapping[str, bytes]) -> None:
        users, refused = set(), {}
        for user_id, raw in entries.items():
            reason = self.parse(user_id, raw)
            if reason is False:
                continue
            users.add(user_id)
            if reason is not None:
                refused[user_id] = reason
        self._users, self._refused = users, refused
        self.loaded = True


class UsageConsumer:
    """Adds each finished request's tokens and cost to its user's entry (a finish hook, then a greenlet)."""

    def __init__(self, client: RespClient, table: UsageTable) -> None:
        self._client = client
        self._table = table
        #: user -> [tokens, cost] not yet in Redis
        self._pending: dict[str, list[float]] = {}
        self._wake = gevent.event.Event()
        self._greenlet = gevent.spawn(self._run)

    def finished(self, outcome: Outcome) -> None:
        ctx = outcome.context
        user_id = getattr(ctx, "user_id", None)
        if not user_id or not self._table.has(user_id):
            return
        tokens, cost = used(outcome)
        if not tokens and not cost:
            return
        self._add(user_id, tokens, cost or 0.0)
        self._wake.set()

    def _add(self, user_id: str, tokens: float, cost: float) -> None:
        pending = self._pending.setdefault(user_id, [0, 0.0])
        pending[0] += tokens
        pending[1] += cost

    def _run(self) -> None:
        delay = _BACKOFF_MIN_S
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._send():
                delay = _BACKOFF_MIN_S
            else:
                gevent.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                self._wake.set()

    def _send(self) -> bool:
        """Send every pending total; False (the totals kept) when Redis could not take them."""
        batch, self._pending = self._pending, {}
        if not batch:
            return True
        now = datetime.datetime.now(datetime.UTC).isoformat()
        users = list(batch)
        commands = [_CONSUME.args([PREFIX + user_id], [int(batch[user_id][0]), repr(float(batch[user_id][1])), now])
                    for user_id in users]
        try:
            answers = pipelined(self._client, commands, raise_errors=False)
        except (redis.RedisError, OSError) as e:
            # NOTE: at least once: a batch whose answer was lost after Redis ran it is sent again.
            for user_id, (tokens, cost) in batch.items():
                self._add(user_id, tokens, cost)
            log.warning("usage quotas: redis could not take the usage of %d users (%s); kept to send again",
                        len(batch), type(e).__name__)
            return False
        except BaseException:
            # Stopped mid-send (the worker is shutting down): what was not sent is kept for close().
            for user_id, (tokens, cost) in batch.items():
                self._add(user_id, tokens, cost)
            raise
        refused = 0
        for user_id, answer in zip(users, answers, strict=True):
            if isinstance(answer, Exception):
                refused += 1  # e.g. a value that is not budapp's JSON: kept, and tried again
                self._add(user_id, *batch[user_id])
            elif answer:
                self._table.put(user_id, answer)
        if refused:
            log.warning("usage quotas: redis refused the usage of %d users; kept to send again", refused)
        return not refused

    def close(self, timeout: float) -> None:
        """Send what is pending (within ``timeout``), then stop."""
        self._greenlet.kill(block=True, timeout=timeout)
        with gevent.Timeout(timeout, False):
            self._send()
        if self._pending:
            log.error("usage quotas: the usage of %d users could not be sent before the worker stopped",
                      len(self._pending))
