-- Create a challenge unless the address is within its resend interval.
-- KEYS[1] challenge   KEYS[2] newest challenge of the address
-- KEYS[3] resend marker   KEYS[4] address blocked flag
-- ARGV: 1 challenge_id, 2 code_mac, 3 email, 4 now, 5 expires_at, 6 max_attempts,
--       7 resend interval (ms), 8 keep (ms)
-- Returns {'created', state} or {'throttled', newest id|nil}.
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'throttled', redis.call('GET', KEYS[2])}
end
local state = 'pending'
if redis.call('EXISTS', KEYS[4]) == 1 then
  state = 'suppressed'
end
redis.call('HSET', KEYS[1],
  'state', state, 'code_mac', ARGV[2], 'email', ARGV[3], 'created_at', ARGV[4],
  'expires_at', ARGV[5], 'attempts', 0, 'max_attempts', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[8])
if tonumber(ARGV[7]) > 0 then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[7])
end
return {'created', state}
