-- Client budgets (GCRA) and settings, in one call, with the request's metrics riding
-- along. Every key is in the client's shard slot `{ea:c<n>}`.
-- KEYS[1]      the shard's copy of the session-limit setting (read when ARGV[1] == '1')
-- KEYS[2]      the shard's metrics hash
-- KEYS[3..n]   one bucket per budget (value: theoretical arrival time, ms)
-- ARGV[1]      '1' to read the session limit
-- ARGV[2]      the number of budgets, b
-- ARGV[1+2j], ARGV[2+2j]   emission interval and burst tolerance (ms) of bucket j
-- ARGV[3+2b..] metrics triples (when: 'always' | 'limited')
-- Returns {1, 0, limit|nil} when allowed (all buckets spent) or {0, retry_ms, nil}.
local now = now_ms()
local budgets = tonumber(ARGV[2])
local retry = 0
for j = 1, budgets do
  retry = math.max(retry, gcra(KEYS[j + 2], now, tonumber(ARGV[1 + 2 * j]),
    tonumber(ARGV[2 + 2 * j]), false))
end
if retry > 0 then
  count_metrics(KEYS[2], 3 + 2 * budgets, 'limited')
  return {0, retry, false}
end
for j = 1, budgets do
  gcra(KEYS[j + 2], now, tonumber(ARGV[1 + 2 * j]), tonumber(ARGV[2 + 2 * j]), true)
end
count_metrics(KEYS[2], 3 + 2 * budgets, 'allowed')
local limit = false
if ARGV[1] == '1' then
  limit = redis.call('GET', KEYS[1])
end
return {1, 0, limit}
