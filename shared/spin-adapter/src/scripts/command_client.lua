-- The first step of a signed command, in the client's shard slot: freshness against
-- Redis' clock (the one clock every instance shares, so a skewed instance can neither
-- widen nor narrow the window), then the client's command budget. A stale command
-- spends nothing.
-- KEYS: 1 the client's command budget
-- ARGV: 1 timestamp_ms, 2 window ms, 3 interval ms, 4 tolerance ms
-- Returns {'ok'} | {'stale', now} | {'rate_limited', wait_ms}
local now = now_ms()
if math.abs(now - tonumber(ARGV[1])) > tonumber(ARGV[2]) then
  return {'stale', now}
end
local wait = gcra(KEYS[1], now, tonumber(ARGV[3]), tonumber(ARGV[4]), true)
if wait > 0 then
  return {'rate_limited', wait}
end
return {'ok'}
