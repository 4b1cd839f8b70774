-- Client budgets (GCRA) and settings, in one call, with the request's metrics riding
-- along. Every key is in the client's shard slot `{ea:c<n>}`.
-- KEYS[1]      the shard's copy of the session-limit setting (read when ARGV[1] == '1')
-- KEYS[2]      the shard's metrics hash
-- KEYS[3..n]   one bucket per budget (value: theoretical arrival time, ms)
-- ARGV[1]      '1' to read the session limit
-- ARGV[2]      the number of budgets, b
-- ARGV[3]      how many of them, the first ones, are spent; the others must only have
--              room (a held budget: the request spends it later, if at all)
-- ARGV[2+2j], ARGV[3+2j]   emission interval and burst tolerance (ms) of bucket j
-- ARGV[4+2b..] metrics triples (when: 'always', 'limited': a spent budget refused,
--              'held': only a held one did)
-- Returns {1, 0, limit|nil} when allowed (the spent buckets spent) or {0, retry_ms, nil}.
local now = now_ms()
local budgets = tonumber(ARGV[2])
local spent = tonumber(ARGV[3])
local retry = 0
local outcome = 'held'
for j = 1, budgets do
  local wait = gcra(KEYS[j + 2], now, tonumber(ARGV[2 + 2 * j]),
    tonumber(ARGV[3 + 2 * j]), false)
  if wait > 0 and j <= spent then
    outcome = 'limited'
  end
  retry = math.max(retry, wait)
end
if retry > 0 then
  count_metrics(KEYS[2], 4 + 2 * budgets, outcome)
  return {0, retry, false}
end
for j = 1, spent do
  gcra(KEYS[j + 2], now, tonumber(ARGV[2 + 2 * j]), tonumber(ARGV[3 + 2 * j]), true)
end
count_metrics(KEYS[2], 4 + 2 * budgets, 'allowed')
local limit = false
if ARGV[1] == '1' then
  limit = redis.call('GET', KEYS[1])
end
return {1, 0, limit}
