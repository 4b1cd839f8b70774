-- Edge budgets (GCRA) and settings, in one call. Every key is under the `{ea:g}` tag.
-- KEYS[1]      the session-limit setting (read when ARGV[2] == '1')
-- KEYS[2..n]   one bucket per budget (value: theoretical arrival time, ms)
-- ARGV[1]      now (ms)
-- ARGV[2]      '1' to read the session limit
-- ARGV[1+2j], ARGV[2+2j]   emission interval and burst tolerance (ms) of bucket j
-- Returns {1, 0, limit|nil} when allowed (all buckets spent) or {0, retry_ms, nil}.
local now = tonumber(ARGV[1])
local new_tat = {}
local retry = 0
for j = 1, #KEYS - 1 do
  local interval = tonumber(ARGV[1 + 2 * j])
  local tolerance = tonumber(ARGV[2 + 2 * j])
  local tat = tonumber(redis.call('GET', KEYS[j + 1]) or now)
  if tat < now then tat = now end
  if tat - now > tolerance then
    retry = math.max(retry, tat - now - tolerance)
  else
    new_tat[j] = tat + interval
  end
end
if retry > 0 then
  return {0, retry, false}
end
for j = 1, #KEYS - 1 do
  redis.call('SET', KEYS[j + 1], new_tat[j], 'PX', new_tat[j] - now)
end
local limit = false
if ARGV[2] == '1' then
  limit = redis.call('GET', KEYS[1])
end
return {1, 0, limit}
