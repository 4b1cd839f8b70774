-- Block or unblock an address (and so its user).
-- KEYS[1] blocked flag (hash), KEYS[2] address -> user id, KEYS[3] consecutive wrong
-- codes (an unblock clears them, ending a wrong-code lockout too)
-- ARGV: 1 prefix, 2 now, 3 reason_code, 4 actor, 5 '1' block / '0' unblock,
--       6 user id ('' = by address), 7 lifecycle ttl, 8 lifecycle maxlen,
--       9 audit ttl, 10 audit maxlen
-- Returns {'ok'} or {'user_not_found'}.
local user_id = redis.call('GET', KEYS[2])
if ARGV[6] ~= '' and user_id ~= ARGV[6] then
  return {'user_not_found'}
end
local event = 'user_unblocked'
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'blocked_at', ARGV[2], 'reason_code', ARGV[3], 'actor', ARGV[4])
  event = 'user_blocked'
else
  redis.call('DEL', KEYS[1], KEYS[3])
end
append(ARGV[1] .. 'lifecycle', ARGV[7], ARGV[8], 'event', event, 'user_id', user_id or '',
  'reason_code', ARGV[3], 'actor', ARGV[4], 'at', ARGV[2])
append(ARGV[1] .. 'audit', ARGV[9], ARGV[10], 'action', event, 'user_id', user_id or '',
  'reason_code', ARGV[3], 'actor', ARGV[4], 'at', ARGV[2])
return {'ok'}
