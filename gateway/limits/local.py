"""The in-process limiter: the scripts of ``scripts.py`` in Python, over a dict instead of Redis.

It serves when Redis is not configured, and with ``fail_open`` while Redis is down or slow: then each
gateway process limits itself (a limit of N per window admits up to N per process). Entries expire
as Redis keys would, swept every few thousand writes.
"""

from __future__ import annotations

import math
import time

from gateway.limits.plan import Check

__all__ = ["LocalLimiter"]

_SWEEP_EVERY = 4096


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalLimiter:
    def __init__(self) -> None:
        #: key -> [expires ms, state...]
        self._state: dict[str, list] = {}
        #: lease set -> members (a process's own leases need no expiry: they die with it)
        self._leases: dict[str, set[str]] = {}
        self._writes = 0

    def _get(self, key: str, now: int) -> list | None:
        entry = self._state.get(key)
        if entry is not None and entry[0] <= now:
            del self._state[key]
            return None
        return entry

    def _put(self, key: str, expires: int, *state: float) -> None:
        self._state[key] = [expires, *state]
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            now = _now_ms()
            for k in [k for k, v in self._state.items() if v[0] <= now]:
                del self._state[k]
            for k in [k for k, v in self._leases.items() if not v]:
                del self._leases[k]

    def check(self, check: Check, member: str) -> list:
        """What the check script would answer (the same list)."""
        now = _now_ms()
        lease_left = -1
        if check.lease_max:
            held = self._leases.setdefault(check.lease_key, set())
            if len(held) >= check.lease_max:
                return [0, 2, 1000, 0]
            lease_left = check.lease_max - len(held) - 1
        step = getattr(self, "_" + check.algorithm)
        states = [step(key, limit, cost, now) for key, limit, cost in zip(check.keys, check.limits, check.costs,
                                                                            strict=True)]
        deny = max((s[0] for s in states), default=-1)
        out = [1, 0, 0, lease_left]
        if deny >= 0:
            out[:3] = [0, 1, max(1, math.ceil(deny))]
            for s in states:
                out += s[1](False)
            return out
        for s in states:
            out += s[1](True)
        if check.lease_max:
            self._leases[check.lease_key].add(member)
        return out

    def _fixed_window(self, key, limit, cost, now):
        cap, window, need = limit.capacity, limit.window_ms, limit.need
        entry = self._get(key, now)
        used, start = (entry[1], entry[2]) if entry is not None else (0, now)
        if now >= start + window:
            used, start = 0, now
        deny = start + window - now if cap - used < need else -1

        def report(apply: bool) -> list:
            u = used
            if apply:
                u = used + cost
                self._put(key, start + window, u, start)
            return [max(0, math.floor(cap - u)), start + window - now, start]

        return deny, report

    def _sliding_window(self, key, limit, cost, now):
        cap, window, need = limit.capacity, limit.window_ms, limit.need
        entry = self._get(key, now)
        idx = now // window
        w, c, p = (entry[1], entry[2], entry[3]) if entry is not None else (None, 0, 0)
        if w == idx - 1:
            p, c = c, 0
        elif w != idx:
            p, c = 0, 0
        elapsed = now - idx * window
        weighted = p * (window - elapsed) / window + c
        deny = -1
        if cap - weighted < need:
            target = cap - need
            if c <= target and p > 0:
                deny = window * (1 - (target - c) / p) - elapsed
            elif c > 0:
                deny = window - elapsed + max(0, window * (1 - target / c))
            else:
                deny = window - elapsed

        def report(apply: bool) -> list:
            wt = weighted
            if apply:
                wt = weighted + cost
                self._put(key, now + 2 * window, idx, c + cost, p)
            return [max(0, math.floor(cap - wt)), window - elapsed, idx]

        return deny, report

    def _token_bucket(self, key, limit, cost, now):
        cap, window, need, refill, step = limit.capacity, limit.window_ms, limit.need, limit.refill, limit.step_ms
        entry = self._get(key, now)
        if entry is None:
            level, ts = cap, now
        else:
            level, ts = entry[1], entry[2]
            if step > 0:
                k = (now - ts) // step
                if k > 0:
                    level, ts = min(cap, level + k * refill), ts + k * step
            else:
                level, ts = min(cap, level + (now - ts) * refill / window), now

        def wait(lv: float, want: float) -> float:
            if want <= lv:
                return 0
            if step > 0:
                return ts + math.ceil((want - lv) / refill) * step - now
            return math.ceil((want - lv) * window / refill)

        deny = wait(level, need) if level < need else -1

        def report(apply: bool) -> list:
            lv = level
            if apply:
                lv = level - cost
                self._put(key, now + max(1, wait(lv, cap)) + 1000, lv, ts)
            return [max(0, math.floor(lv)), wait(lv, cap), 0]

        return deny, report

    def settle(self, items: list[tuple]) -> None:
        """``(key, kind, delta, window id, limit)`` items, as the settle script takes them."""
        now = _now_ms()
        for key, kind, delta, wid, limit in items:
            entry = self._get(key, now)
            if kind == "f":
                if entry is not None and entry[2] == wid:
                    entry[1] += delta
            elif kind == "s":
                if entry is not None and entry[1] == wid:
                    entry[2] += delta
                elif entry is not None and entry[1] == wid + 1:
                    entry[3] += delta
            else:
                cap, step = limit.capacity, limit.step_ms
                level, ts = (entry[1], entry[2]) if entry is not None else (cap, now)
                level = min(cap, level - delta)  # a refund never fills a bucket past its size
                full = 0
                if level < cap:
                    full = (ts + math.ceil((cap - level) / limit.refill) * step - now if step > 0
                            else math.ceil((cap - level) * limit.window_ms / limit.refill))
                self._put(key, now + full + 1000, level, ts)

    def release(self, lease_key: str, member: str) -> None:
        held = self._leases.get(lease_key)
        if held is not None:
            held.discard(member)
