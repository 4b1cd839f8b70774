-- Block or unblock an address (and so its user).
-- KEYS: 1 blocked flag (hash), 2 address -> user id, 3 consecutive wrong codes (an
--       unblock clears them, ending a wrong-code lockout too), 4 lifecycle, 5 audit
-- ARGV: 1 reason_code, 2 actor, 3 '1' block / '0' unblock, 4 user id ('' = by address),
--       5 lifecycle ttl, 6 lifecycle maxlen, 7 audit ttl, 8 audit maxlen,
--       9 '1' when the external directory has made the change to the user,
--       10 by address: the user the block is for, the external directory's user of the
--       address, who may not have logged in with it here yet ('' = the address's user),
--       11 '1': only an audit record `unblock_overtaken`, the flag left as it is (an
--       unblock a block overtook, which may have changed the directory)
-- A block flag names every user whose sessions it suspends (a field `u:<user id>` each,
-- `u:` for every session: an address without a user); see `block_stops` (lib.lua).
-- Returns {'ok'} or {'user_not_found'} (the address is not the user's: nothing changed,
-- except, when the directory made the change, an audit record under the user, which the
-- user's audit reads here).
local user_id = redis.call('GET', KEYS[2])
local now = now_ms()
local event = 'user_unblocked'
if ARGV[3] == '1' then
  event = 'user_blocked'
end
-- Whom the change is for, and on record under.
local named = user_id or ''
if ARGV[10] ~= '' then
  named = ARGV[10]
end
if ARGV[4] ~= '' and user_id ~= ARGV[4] then
  if ARGV[9] == '1' then
    append(KEYS[5], ARGV[7], ARGV[8], 'action', event, 'user_id', ARGV[4],
      'reason_code', ARGV[1], 'actor', ARGV[2], 'at', now)
  end
  return {'user_not_found'}
end
if ARGV[11] == '1' then
  append(KEYS[5], ARGV[7], ARGV[8], 'action', 'unblock_overtaken', 'user_id', named,
    'reason_code', ARGV[1], 'actor', ARGV[2], 'at', now)
  return {'ok'}
end
if ARGV[3] == '1' then
  local f = redis.call('HMGET', KEYS[1], 'blocked_at', 'by_user')
  if f[1] and not f[2] then
    -- A flag set before flags named their users stopped the address's user (everyone
    -- when it had none): it still does.
    redis.call('HSET', KEYS[1], 'u:' .. (user_id or ''), 1)
  end
  redis.call('HSET', KEYS[1], 'blocked_at', now, 'reason_code', ARGV[1], 'actor', ARGV[2],
    'by_user', 1, 'u:' .. named, 1)
else
  redis.call('DEL', KEYS[1], KEYS[3])
end
append(KEYS[4], ARGV[5], ARGV[6], 'event', event, 'user_id', named,
  'reason_code', ARGV[1], 'actor', ARGV[2], 'at', now)
append(KEYS[5], ARGV[7], ARGV[8], 'action', event, 'user_id', named,
  'reason_code', ARGV[1], 'actor', ARGV[2], 'at', now)
return {'ok'}
