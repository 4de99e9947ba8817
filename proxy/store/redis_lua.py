"""The Lua scripts that make the Redis backend's read-modify-write steps atomic.

Redis runs a script alone, so every replica sees a limit check and its increment, or an audit
id's dedup mark and its stream entry, as one step. Time comes from the server (``TIME``), so
replicas with drifting clocks still share one window.
"""

from __future__ import annotations

from proxy.store.limits import WINDOW_S

ALLOW_OOM = "#!lua flags=allow-oom\n"
"""The first line of the limit scripts (Redis 7 script flags): they run at ``maxmemory`` too,
where Redis refuses every other write, so a Redis filled by the audit stream or a cache still
holds each key to its limits (rather than ``limits_on_error`` taking every key's limits off,
or refusing every limited key). Safe because their writes are bounded: a key's usage hash holds
at most one field per second of the window (older ones are deleted as it is read), it expires
a window after its last write, and only keys found in the store are counted. Redis 6 knows no
flags (the line does not compile there): ``proxy.store.redis_store`` then runs them without."""

_WINDOW = f"""
local window = {WINDOW_S}
local now = tonumber(redis.call('TIME')[1])
local oldest = now - window + 1
local function usage(key)
  local flat = redis.call('HGETALL', key)
  local used, buckets = 0, {{}}
  for i = 1, #flat, 2 do
    local second, amount = tonumber(flat[i]), tonumber(flat[i + 1])
    if second < oldest then
      redis.call('HDEL', key, flat[i])
    else
      used = used + amount
      buckets[#buckets + 1] = {{second, amount}}
    end
  end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  return used, buckets
end
local function retry_after(buckets, used, limit)
  for _, bucket in ipairs(buckets) do
    used = used - bucket[2]
    if used < limit then return math.max(1, bucket[1] + window - now) end
  end
  return window
end
"""

ADMIT = ALLOW_OOM + _WINDOW + """
-- KEYS: requests hash, tokens hash; ARGV: rpm, tpm (0: no limit)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 then
  local used, buckets = usage(KEYS[2])
  if used >= tpm then return {0, retry_after(buckets, used, tpm), 'tpm'} end
end
if rpm > 0 then
  local used, buckets = usage(KEYS[1])
  if used >= rpm then return {0, retry_after(buckets, used, rpm), 'rpm'} end
  redis.call('HINCRBY', KEYS[1], now, 1)
  redis.call('EXPIRE', KEYS[1], window + 1)
end
return {1, 0, ''}
"""

RESERVE = ALLOW_OOM + _WINDOW + """
-- KEYS: tokens hash; ARGV: tpm, least, most (proxy.store.limits.reservation). Returns
-- {1, tokens reserved, second} or {0, retry after s, second}.
local tpm, least, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local used, buckets = usage(KEYS[1])
if used + least > tpm then return {0, retry_after(buckets, used, tpm - least + 1), now} end
local reserved = math.max(least, math.min(most, tpm - used))
redis.call('HINCRBY', KEYS[1], now, reserved)
redis.call('EXPIRE', KEYS[1], window + 1)
return {1, reserved, now}
"""

CHARGE = ALLOW_OOM + _WINDOW + """
-- KEYS: tokens hash; ARGV: tokens, refund, second of the refund's reservation
local tokens, refund, at = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if refund > 0 and at >= oldest then
  if tonumber(redis.call('HINCRBY', KEYS[1], at, -refund)) <= 0 then
    redis.call('HDEL', KEYS[1], at)
  end
end
if tokens > 0 then redis.call('HINCRBY', KEYS[1], now, tokens) end
redis.call('EXPIRE', KEYS[1], window + 1)
return 1
"""

AUDIT_APPEND = """
-- KEYS: stream, id set of the record's day; ARGV: id, record JSON, id set TTL s (always > 0),
-- MINID ms (0: none), MAXLEN (0: none). Returns 1 when written, 0 for a replayed id.
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[4], '*', 'id', ARGV[1], 'record', ARGV[2])
else
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'record', ARGV[2])
end
if tonumber(ARGV[5]) > 0 then redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[5]) end
return 1
"""

CACHE_SET = """
-- KEYS: value key, index (sorted set by expiry, in microseconds); ARGV: value, ttl ms,
-- max entries. The index bounds the cache: beyond max entries the soonest-expiring go (with
-- one TTL per cache: the oldest; microseconds keep the order of two sets in one millisecond).
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now_us + tonumber(ARGV[2]) * 1000, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_us)
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  local evicted = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #evicted, 2 do redis.call('DEL', evicted[i]) end
end
return 1
"""

CREATE_KEY = """
-- KEYS: key hash, set of ids; ARGV: id, then field, value pairs. 0 when the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

UPDATE_KEY = """
-- KEYS: key hash; ARGV: field, value pairs ('' deletes the field). 0 when there is no key.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""

REVOKE_KEY = """
-- KEYS: key hash; ARGV: time. Keeps the first revocation time. 0 when there is no key.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""
