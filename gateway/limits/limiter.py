"""Running a request's checks: in Redis (one round trip), or in-process when Redis fails and
``fail_open`` allows; settling reservations and releasing leases when the request ends.

While Redis is failing, checks go straight to the in-process limiter for a second before Redis is
tried again, so an outage costs each request nothing but the local check; a metric counts those
checks and a warning (at most one each ten seconds) says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
import redis

from gateway.errors import ServiceUnavailableError
from gateway.limits.local import LocalLimiter
from gateway.limits.plan import Check, used
from gateway.limits.scripts import CHECKS, RELEASE, RENEW, SETTLE, pipelined
from gateway.logs import Throttled
from gateway.outcome import Outcome
from gateway.stores.resp import OneWay, RespClient

__all__ = ["Admission", "RateLimiter"]

log = logging.getLogger(__name__)

#: After a Redis failure, how long checks stay in-process before Redis is tried again.
_RETRY_REDIS_S = 1.0
_WARN_EVERY_S = 10.0
_SETTLE_KIND = {"fixed_window": "f", "sliding_window": "s", "token_bucket": "b"}


class Admission:
    """A request's admitted checks and what each answered, to settle and release at its end."""

    __slots__ = ("checks", "results", "local", "member")

    def __init__(self, checks: list[Check], results: list[list], local: bool, member: str) -> None:
        self.checks = checks
        self.results = results
        #: Admitted by the in-process limiter (so settled and released there too).
        self.local = local
        self.member = member

    @property
    def admitted(self) -> bool:
        return all(r[0] == 1 for r in self.results)


class RateLimiter:
    """``client`` is the limits' own Redis client (short timeouts), or None: in-process only."""

    def __init__(self, client: RespClient | None, *, fail_open: bool, lease_ttl_s: float,
                 local_checked: Callable[[str], None] | None = None) -> None:
        self._client = client
        self._local = LocalLimiter()
        self._fail_open = fail_open
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._local_checked = local_checked or (lambda reason: None)
        self._redis_after = 0.0
        self._warn = Throttled(log, _WARN_EVERY_S)
        #: Leases held in Redis by requests of this process: member -> lease set, renewed until released.
        self._held: dict[str, str] = {}
        self._renewer: gevent.Greenlet | None = None
        #: Settlements and releases: sent before the request's answer goes out, answers read apart.
        self._oneway = None if client is None else OneWay(client)

    def load_scripts(self) -> None:
        """SCRIPT LOAD every script (at start; a failure here is retried on first use)."""
        if self._client is None:
            return
        try:
            for script in (*CHECKS.values(), SETTLE, RENEW):
                script.load(self._client)
        except (redis.RedisError, OSError) as e:
            log.warning("could not load the rate-limit scripts into redis yet (%s)", type(e).__name__)

    # -- admission ---------------------------------------------------------------------------------

    def admit(self, checks: list[Check], member: str) -> Admission:
        """Run ``checks``; an admission that is not ``admitted`` has changed nothing anywhere."""
        client = self._client
        if client is not None and time.monotonic() >= self._redis_after:
            try:
                results = self._redis_checks(client, checks, member)
            except (redis.RedisError, OSError) as e:
                self._redis_failed(e, checks, member)
            else:
                admission = Admission(checks, results, False, member)
                if not admission.admitted and len(checks) > 1:
                    self._undo(admission)
                elif admission.admitted:
                    for check in checks:
                        if check.lease_key is not None:
                            self._hold(member, check.lease_key)
                return admission
        elif client is not None:
            if not self._fail_open:
                raise ServiceUnavailableError("Rate limiting is unavailable")
            self._local_checked("redis_unavailable")
        return self._local_admit(checks, member)

    def _redis_checks(self, client: RespClient, checks: list[Check], member: str) -> list[list]:
        if len(checks) == 1:
            check = checks[0]
            return [CHECKS[check.algorithm](client, *self._argv(check, member))]
        return pipelined(client, [CHECKS[c.algorithm].args(*self._argv(c, member)) for c in checks])

    def _argv(self, check: Check, member: str) -> tuple[list, list]:
        keys = list(check.keys)
        argv: list = [check.lease_max, member, self._lease_ttl_ms]
        if check.lease_key is not None:
            keys.insert(0, check.lease_key)
        for limit, cost in zip(check.limits, check.costs, strict=True):
            argv += limit.argv(cost)
        return keys, argv

    def _redis_failed(self, e: Exception, checks: list[Check], member: str) -> None:
        """Redis did not answer a check: it is left alone for a second, unless it did answer, with an
        error about this request's keys (then only this request is checked in-process)."""
        how = "each gateway process limits itself" if self._fail_open else "limited requests get 503"
        if isinstance(e, redis.ResponseError):
            # NOTE: the type only: redis's messages name its host and port.
            self._warn.warning("rate limits: redis refused a check (%s); this request %s", type(e).__name__,
                       "is checked in-process" if self._fail_open else "gets 503")
        else:
            self._redis_after = time.monotonic() + _RETRY_REDIS_S
            self._warn.warning("rate limits: redis failed (%s); until it answers again %s", type(e).__name__, how)
            if isinstance(e, redis.TimeoutError):
                # The script may have run and taken a lease no one will renew or release: free it.
                leases = [c.lease_key for c in checks if c.lease_key is not None]
                if leases:
                    gevent.spawn(self._release_quietly, leases, member)
        if not self._fail_open:
            raise ServiceUnavailableError("Rate limiting is unavailable") from None
        self._local_checked("redis_timeout" if isinstance(e, redis.TimeoutError) else "redis_error")


    def _release_quietly(self, lease_keys: list[str], member: str) -> None:
        try:
            pipelined(self._client, [(RELEASE, key, member) for key in lease_keys])
        except (redis.RedisError, OSError):
            pass  # it expires with its TTL

    def _local_admit(self, checks: list[Check], member: str) -> Admission:
        results = [self._local.check(check, member) for check in checks]
        admission = Admission(checks, results, True, member)
        if not admission.admitted and len(checks) > 1:
            self._undo(admission)
        return admission

    def _undo(self, admission: Admission) -> None:
        """Give back what the admitted checks of a refused request took (they live under other tags)."""
        items, releases = [], []
        for check, result in zip(admission.checks, admission.results, strict=True):
            if result[0] != 1:
                continue
            items += self._settle_items(check, result, [-cost for cost in check.costs])
            if check.lease_key is not None:
                releases.append(check.lease_key)
        self._apply(admission, items, releases, wait=True)

    # -- the end of a request ----------------------------------------------------------------------

    def finish(self, admission: Admission, outcome: Outcome) -> None:
        """Settle the token and cost reservations to the request's real use, and release its leases."""
        used_tokens, used_cost = used(outcome)
        items, releases = [], []
        for check, result in zip(admission.checks, admission.results, strict=True):
            deltas = []
            for limit, cost in zip(check.limits, check.costs, strict=True):
                if limit.kind == "tokens":
                    deltas.append(used_tokens - cost)
                elif limit.kind == "cost" and used_cost is not None:
                    deltas.append(used_cost - cost)
                else:
                    deltas.append(0)
            items += self._settle_items(check, result, deltas)
            if check.lease_key is not None:
                releases.append(check.lease_key)
        self._apply(admission, items, releases)

    def _settle_items(self, check: Check, result: list, deltas: list[float]) -> list[tuple]:
        kind = _SETTLE_KIND[check.algorithm]
        items = []
        for i, (key, limit, delta) in enumerate(zip(check.keys, check.limits, deltas, strict=True)):
            if delta:
                items.append((key, kind, delta, result[6 + 3 * i], limit))
        return items

    def _apply(self, admission: Admission, items: list[tuple], releases: list[str], *, wait: bool = False) -> None:
        """Settle ``items`` and release ``releases``: in Redis, written (not waited for) before the
        request's answer leaves; ``wait``: and answered, for an undo the next check must see."""
        if not items and not releases:
            return
        member = admission.member
        if admission.local:
            self._local.settle(items)
            for lease_key in releases:
                self._local.release(lease_key, member)
            return
        if releases:
            self._held.pop(member, None)
        commands = []
        # NOTE: the items of one check share a tag; several checks' items are one call per tag.
        for tag_items in _by_tag(items):
            keys, argv = [], []
            for key, kind, delta, wid, limit in tag_items:
                keys.append(key)
                argv += [kind, delta, wid, limit.capacity, limit.window_ms, limit.refill, limit.step_ms]
            # NOTE: the one-way connection gets no replies, so no NOSCRIPT either: the script goes whole.
            commands.append(SETTLE.args(keys, argv) if wait else ("EVAL", SETTLE.source, len(keys), *keys, *argv))
        commands += [(RELEASE, lease_key, member) for lease_key in releases]
        try:
            if wait:
                pipelined(self._client, commands)
            else:
                self._oneway.send(commands)
        except (redis.RedisError, OSError) as e:
            # The windows move on; a lease not released expires with its TTL.
            self._warn.warning("rate limits: could not settle a request in redis (%s)", type(e).__name__)

    # -- leases ------------------------------------------------------------------------------------

    def _hold(self, member: str, lease_key: str) -> None:
        self._held[member] = lease_key
        if self._renewer is None or self._renewer.dead:
            self._renewer = gevent.spawn(self._renew_forever)

    def _renew_forever(self) -> None:
        """Leases of requests still running get a new expiry every third of their TTL."""
        while self._held:
            gevent.sleep(self._lease_ttl_ms / 3000)
            by_key: dict[str, list[str]] = {}
            for member, lease_key in list(self._held.items()):
                by_key.setdefault(lease_key, []).append(member)
            commands = [RENEW.args([lease_key], [*members, self._lease_ttl_ms]) for lease_key, members in by_key.items()]
            try:
                pipelined(self._client, commands)
            except (redis.RedisError, OSError) as e:
                self._warn.warning("rate limits: could not renew concurrency leases (%s)", type(e).__name__)

    def close(self) -> None:
        if self._renewer is not None:
            self._renewer.kill(block=False)
        if self._oneway is not None:
            self._oneway.close()


def _by_tag(items: list[tuple]) -> list[list[tuple]]:
    groups: dict[str, list[tuple]] = {}
    for item in items:
        key = item[0]
        groups.setdefault(key[: key.index("}") + 1], []).append(item)
    return list(groups.values())
