"""The Lua scripts that make limits exact across gateways: each check is one atomic script in Redis.

One script per algorithm (fixed window, sliding window, token bucket). A call checks every limit of
one request that shares a hash tag (a model's request and token windows for one key) and, when the
model caps concurrency, takes a lease in the same call: all of it admits or none of it does. Time is
Redis's own (``TIME``), so gateways with skewed clocks still share one window.

Calling convention (every check script):
  KEYS   the lease set first when there is a lease, then one key per limit
  ARGV   lease max (0: none), lease member, lease ttl ms, then per limit: capacity, window ms, cost,
         need (the remaining amount admission asks for), refill per window, refill step ms (0: continuous)
  return {admitted 1|0, why (0 ok, 1 limit, 2 concurrency), retry ms, leases left (-1: no lease),
          then per limit: remaining, ms to reset, window id (for settling)}

The in-process limiter (``local.py``) implements the same algorithms line for line.
"""

from __future__ import annotations

import hashlib

from redis.exceptions import NoScriptError

from gateway.stores.resp import RespClient

__all__ = ["CHECKS", "RELEASE", "RENEW", "SETTLE", "Script", "STRIDE", "pipelined"]

#: ARGV entries per limit.
STRIDE = 6

_PROLOGUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_max = tonumber(ARGV[1])
local first = 1
local lease_left = -1
if lease_max > 0 then
  first = 2
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local held = redis.call('ZCARD', KEYS[1])
  if held >= lease_max then return {0, 2, 1000, 0} end
  lease_left = lease_max - held - 1
end
local n = #KEYS - first + 1
local deny = -1
local st = {}
local function arg(i, k) return tonumber(ARGV[3 + (i - 1) * 6 + k]) end
local function limit(i) return KEYS[first + i - 1], arg(i, 1), arg(i, 2), arg(i, 3), arg(i, 4) end
"""

# A key's TTL: whole milliseconds, at least 1 s more than its state matters, at most a year (a
# larger number would be written as 1e+17, which PEXPIRE refuses).
_TTL = """
local function ttl_ms(ms) return math.floor(math.min(math.max(ms, 0), 31536000000)) + 1000 end
"""

_EPILOGUE = """
local out = {1, 0, 0, lease_left}
if deny >= 0 then
  out[1] = 0; out[2] = 1; out[3] = math.max(1, math.ceil(deny))
  for i = 1, n do report(out, i, false) end
  return out
end
for i = 1, n do report(out, i, true) end
if lease_max > 0 then
  local ttl = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return out
"""

# A window of `window` ms opened by its first use: hash {c = used, s = start ms}.
_FIXED = """
for i = 1, n do
  local key, cap, window, cost, need = limit(i)
  local v = redis.call('HMGET', key, 'c', 's')
  local used, start = tonumber(v[1]), tonumber(v[2])
  if not used or not start or now >= start + window then used = 0; start = now end
  st[i] = {key, cap, window, cost, used, start}
  if cap - used < need then deny = math.max(deny, start + window - now) end
end
local function report(out, i, apply)
  local s = st[i]
  local used = s[5]
  if apply then
    used = used + s[4]
    redis.call('HSET', s[1], 'c', used, 's', s[6])
    redis.call('PEXPIRE', s[1], ttl_ms(s[6] + s[3] - now))
  end
  out[#out + 1] = math.max(0, math.floor(s[2] - used))
  out[#out + 1] = s[6] + s[3] - now
  out[#out + 1] = s[6]
end
"""

# Two adjacent fixed windows, the previous one weighted by how much of it still overlaps the last
# `window` ms: hash {w = window index, c = its count, p = the previous window's count}.
_SLIDING = """
for i = 1, n do
  local key, cap, window, cost, need = limit(i)
  local v = redis.call('HMGET', key, 'w', 'c', 'p')
  local idx = math.floor(now / window)
  local w, c, p = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
  if w == idx - 1 then p = c; c = 0 elseif w ~= idx then p = 0; c = 0 end
  local elapsed = now - idx * window
  local weighted = p * (window - elapsed) / window + c
  st[i] = {key, cap, window, cost, idx, c, p, weighted, elapsed}
  if cap - weighted < need then
    local target = cap - need
    local wait
    if c <= target and p > 0 then
      wait = window * (1 - (target - c) / p) - elapsed
    elseif c > 0 then
      wait = window - elapsed + math.max(0, window * (1 - target / c))
    else
      wait = window - elapsed
    end
    deny = math.max(deny, wait)
  end
end
local function report(out, i, apply)
  local s = st[i]
  local weighted = s[8]
  if apply then
    weighted = weighted + s[4]
    redis.call('HSET', s[1], 'w', s[5], 'c', s[6] + s[4], 'p', s[7])
    redis.call('PEXPIRE', s[1], ttl_ms(2 * s[3]))
  end
  out[#out + 1] = math.max(0, math.floor(s[2] - weighted))
  out[#out + 1] = s[3] - s[9]
  out[#out + 1] = s[5]
end
"""

# A bucket of `cap` that gains `refill` per `window` ms, continuously (step 0) or in whole steps of
# `step` ms counted from its first use: hash {l = level, t = last refill ms}.
_BUCKET = """
local function refill_wait(s, level, want)
  if want <= level then return 0 end
  if s[7] > 0 then return s[6] + math.ceil((want - level) / s[5]) * s[7] - now end
  return math.ceil((want - level) * s[3] / s[5])
end
for i = 1, n do
  local key, cap, window, cost, need = limit(i)
  local refill, step = arg(i, 5), arg(i, 6)
  local v = redis.call('HMGET', key, 'l', 't')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if not level or not ts then
    level = cap; ts = now
  elseif step > 0 then
    local k = math.floor((now - ts) / step)
    if k > 0 then level = math.min(cap, level + k * refill); ts = ts + k * step end
  else
    level = math.min(cap, level + (now - ts) * refill / window); ts = now
  end
  st[i] = {key, cap, window, cost, refill, ts, step, level}
  if level < need then deny = math.max(deny, refill_wait(st[i], level, need)) end
end
local function report(out, i, apply)
  local s = st[i]
  local level = s[8]
  local full = refill_wait(s, level, s[2])
  if apply then
    level = level - s[4]
    full = refill_wait(s, level, s[2])
    redis.call('HSET', s[1], 'l', level, 't', s[6])
    redis.call('PEXPIRE', s[1], ttl_ms(full))
  end
  out[#out + 1] = math.max(0, math.floor(level))
  out[#out + 1] = full
  out[#out + 1] = 0
end
"""

# KEYS: one per item; ARGV per item: kind (f|s|b), delta, window id, capacity, window ms, refill, step ms.
# Moves a reservation to what was really used, in the window it was made in (gone windows: nothing).
SETTLE_SOURCE = _TTL + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local key, b = KEYS[i], (i - 1) * 7
  local kind, delta, id = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if kind == 'f' then
    if tonumber(redis.call('HGET', key, 's')) == id then redis.call('HINCRBYFLOAT', key, 'c', delta) end
  elseif kind == 's' then
    local w = tonumber(redis.call('HGET', key, 'w'))
    if w == id then redis.call('HINCRBYFLOAT', key, 'c', delta)
    elseif w == id + 1 then redis.call('HINCRBYFLOAT', key, 'p', delta) end
  else
    local cap, window, refill, step = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]),
      tonumber(ARGV[b + 7])
    local v = redis.call('HMGET', key, 'l', 't')
    local level, ts = tonumber(v[1]), tonumber(v[2])
    if not level or not ts then level = cap; ts = now end
    -- A refund never fills a bucket past its size.
    level = math.min(cap, level - delta)
    redis.call('HSET', key, 'l', level, 't', ts)
    local full = 0
    if level < cap then
      if step > 0 then full = ts + math.ceil((cap - level) / refill) * step - now
      else full = math.ceil((cap - level) * window / refill) end
    end
    redis.call('PEXPIRE', key, ttl_ms(full))
  end
end
return 1
"""

# KEYS[1] the lease set; ARGV: member, ttl ms. A lease still held gets a new expiry.
RENEW_SOURCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[#ARGV])
for i = 1, #ARGV - 1 do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""


#: Every script made, by SHA1: what to load when Redis has forgotten one.
_BY_SHA: dict[str, Script] = {}


class Script:
    """A Lua script called by its SHA1 (EVALSHA); loaded with SCRIPT LOAD at start, and again when
    Redis answers NOSCRIPT (it restarted, or its script cache was flushed)."""

    __slots__ = ("name", "source", "sha")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        _BY_SHA[self.sha] = self

    def load(self, client: RespClient) -> None:
        client.execute("SCRIPT", "LOAD", self.source)

    def args(self, keys: list[str], argv: list) -> tuple:
        return ("EVALSHA", self.sha, len(keys), *keys, *argv)

    def __call__(self, client: RespClient, keys: list[str], argv: list):
        try:
            return client.execute(*self.args(keys, argv))
        except NoScriptError:
            self.load(client)
            return client.execute(*self.args(keys, argv))


def pipelined(client: RespClient, commands: list[tuple], *, raise_errors: bool = True) -> list:
    """Send ``commands`` in one round trip. Scripts Redis has forgotten are loaded and the commands
    that met NOSCRIPT sent again (NOSCRIPT means the script did not run); an error answer is raised,
    or with ``raise_errors=False`` left in its place."""
    answers = client.pipeline(commands)
    again = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
    if again:
        for sha in {commands[i][1] for i in again}:
            _BY_SHA[sha].load(client)
        for i, answer in zip(again, client.pipeline([commands[i] for i in again]), strict=True):
            answers[i] = answer
    if raise_errors:
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
    return answers


#: The check script of each algorithm.
CHECKS = {
    "fixed_window": Script("fixed_window", _PROLOGUE + _TTL + _FIXED + _EPILOGUE),
    "sliding_window": Script("sliding_window", _PROLOGUE + _TTL + _SLIDING + _EPILOGUE),
    "token_bucket": Script("token_bucket", _PROLOGUE + _TTL + _BUCKET + _EPILOGUE),
}
SETTLE = Script("settle", SETTLE_SOURCE)
RENEW = Script("renew", RENEW_SOURCE)
#: Releasing a lease is one plain command: ZREM lease-set member.
RELEASE = "ZREM"
