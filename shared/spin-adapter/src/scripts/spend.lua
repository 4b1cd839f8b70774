-- Spends one call of a client budget whether or not it has room: the call already
-- happened (a wrong code). Past its limit the bucket's time moves on, so guard.lua
-- refuses for longer: calls that raced past the check still cost their wait.
-- KEYS[1] the bucket (value: theoretical arrival time, ms), in the client's shard
-- ARGV: 1 emission interval (ms)
-- Returns the budget's theoretical arrival time (ms).
local now = now_ms()
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], tat, 'PX', tat - now)
return tat
