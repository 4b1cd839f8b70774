-- Create a challenge unless the address is within its resend interval and its newest
-- challenge can still be confirmed.
-- KEYS[1] challenge   KEYS[2] newest challenge of the address
-- KEYS[3] resend marker   KEYS[4] address blocked flag   KEYS[5] the address's send budget
-- ARGV: 1 challenge_id, 2 code_mac, 3 email ('': keep none), 4 lifetime (ms), 5 max_attempts,
--       6 resend interval (ms), 7 keep (ms), 8/9 emission interval/burst tolerance (ms)
--       of the address's send budget, 10 the address's whole MAC (hex)
-- Returns {'created', state, expires_at}, {'throttled', newest id} or
-- {'rate_limited', retry ms}.
local now = now_ms()
local blocked = redis.call('EXISTS', KEYS[4]) == 1
-- The interval spares the address a second mail while the first code still works. A
-- newest challenge that is confirmed (another device logging in), dead of wrong codes,
-- expired, or whose mail failed holds nothing back: answering it would hand the client a
-- challenge it cannot use. Nor does one suppressed while the address was blocked, once it
-- is unblocked. A resend answered here mails nothing, so it spends none of the address's
-- send budget (spent below, for each challenge made): resends within the interval cannot
-- use it up and keep the address's owner from the next code.
if redis.call('EXISTS', KEYS[3]) == 1 then
  local newest = redis.call('GET', KEYS[2])
  if newest then
    local ch = redis.call('HMGET', challenge_key(KEYS[2], newest), 'state', 'expires_at')
    local open = ch[1] == 'pending' or ch[1] == 'sent' or (ch[1] == 'suppressed' and blocked)
    if open and now < (tonumber(ch[2]) or 0) then
      return {'throttled', newest}
    end
  end
end
local wait = gcra(KEYS[5], now, tonumber(ARGV[8]), tonumber(ARGV[9]), true)
if wait > 0 then
  return {'rate_limited', wait}
end
local state = 'pending'
if blocked then
  state = 'suppressed'
end
local expires_at = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1],
  'state', state, 'code_mac', ARGV[2], 'created_at', now,
  'expires_at', expires_at, 'attempts', 0, 'max_attempts', ARGV[5],
  'address_mac', ARGV[10])
-- The address in clear only where a confirm hands it to the user service (empty: none).
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'email', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[7])
if tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[6])
end
return {'created', state, expires_at}
