-- The first step of a signed command, in the client's shard slot: freshness against
-- Redis' clock (the one clock every instance shares, so a skewed instance can neither
-- widen nor narrow the window), then the client's command budget. A stale command
-- spends nothing. The request's metrics ride along.
-- KEYS: 1 the client's command budget, 2 the shard's metrics hash
-- ARGV: 1 timestamp_ms, 2 window ms, 3 interval ms, 4 tolerance ms,
--       5.. metrics triples (when: 'always' | 'stale' | 'limited')
-- Returns {'ok'} | {'stale', now} | {'rate_limited', wait_ms}
local now = now_ms()
if math.abs(now - tonumber(ARGV[1])) > tonumber(ARGV[2]) then
  count_metrics(KEYS[2], 5, 'stale')
  return {'stale', now}
end
local wait = gcra(KEYS[1], now, tonumber(ARGV[3]), tonumber(ARGV[4]), true)
if wait > 0 then
  count_metrics(KEYS[2], 5, 'limited')
  return {'rate_limited', wait}
end
count_metrics(KEYS[2], 5, 'allowed')
return {'ok'}
