-- Revoke up to ARGV[8] active sessions created at or before a bound, oldest first.
-- KEYS[1] active sessions, KEYS[2] address -> user id
-- ARGV: 1 prefix, 2 now, 3 reason_code, 4 actor, 5 retention ms, 6 lifecycle ttl ms,
--       7 lifecycle maxlen, 8 batch size, 9 upper member bound, 10 user id ('' = any),
--       11 revoked so far, 12 audit action, 13 audit ttl ms, 14 audit maxlen
-- Returns {'user_not_found'} or {'ok', revoked, more (0/1)}.
if ARGV[10] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[10] then
  return {'user_not_found'}
end
local c = {prefix = ARGV[1], now = ARGV[2], reason = ARGV[3], actor = ARGV[4],
  retention = ARGV[5], lifecycle_ttl = ARGV[6], lifecycle_max = ARGV[7]}
local members = redis.call('ZRANGEBYLEX', KEYS[1], '-', '[' .. ARGV[9], 'LIMIT', 0, ARGV[8])
for _, member in ipairs(members) do
  revoke_member(c, member)
end
local more = #redis.call('ZRANGEBYLEX', KEYS[1], '-', '[' .. ARGV[9], 'LIMIT', 0, 1)
if more == 0 then
  local user_id = redis.call('GET', KEYS[2]) or ''
  append(ARGV[1] .. 'audit', ARGV[13], ARGV[14], 'action', ARGV[12], 'user_id', user_id,
    'revoked_count', tonumber(ARGV[11]) + #members, 'reason_code', ARGV[3],
    'actor', ARGV[4], 'at', ARGV[2])
end
return {'ok', #members, more}
