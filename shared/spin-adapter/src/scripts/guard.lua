-- Client budgets (GCRA) and settings, in one call. Every key is in the client's shard
-- slot `{ea:c<n>}`.
-- KEYS[1]      the shard's copy of the session-limit setting (read when ARGV[1] == '1')
-- KEYS[2..n]   one bucket per budget (value: theoretical arrival time, ms)
-- ARGV[1]      '1' to read the session limit
-- ARGV[2j], ARGV[2j+1]   emission interval and burst tolerance (ms) of bucket j
-- Returns {1, 0, limit|nil} when allowed (all buckets spent) or {0, retry_ms, nil}.
local now = now_ms()
local retry = 0
for j = 1, #KEYS - 1 do
  retry = math.max(retry, gcra(KEYS[j + 1], now, tonumber(ARGV[2 * j]),
    tonumber(ARGV[2 * j + 1]), false))
end
if retry > 0 then
  return {0, retry, false}
end
for j = 1, #KEYS - 1 do
  gcra(KEYS[j + 1], now, tonumber(ARGV[2 * j]), tonumber(ARGV[2 * j + 1]), true)
end
local limit = false
if ARGV[1] == '1' then
  limit = redis.call('GET', KEYS[1])
end
return {1, 0, limit}
