-- Revoke one session (idempotent). KEYS[1] session record.
-- ARGV: 1 prefix, 2 now, 3 reason_code, 4 actor, 5 retention ms, 6 lifecycle ttl ms,
--       7 lifecycle maxlen, 8 audit ttl ms, 9 audit maxlen
-- Returns {'not_found'} or {'revoked'|'already', <record fields...>}.
local fields = {'device_session_id', 'user_id', 'client_public_key', 'status', 'created_at',
  'revoked_at', 'revoke_reason_code', 'revoke_actor', 'client_addr', 'user_agent', 'zmember'}
local rec = redis.call('HMGET', KEYS[1], unpack(fields))
if not rec[1] then
  return {'not_found'}
end
local outcome = 'already'
if rec[4] ~= 'revoked' then
  local c = {prefix = ARGV[1], now = ARGV[2], reason = ARGV[3], actor = ARGV[4],
    retention = ARGV[5], lifecycle_ttl = ARGV[6], lifecycle_max = ARGV[7]}
  revoke_member(c, rec[11])
  append(ARGV[1] .. 'audit', ARGV[8], ARGV[9], 'action', 'revoke_session',
    'device_session_id', rec[1], 'user_id', rec[2], 'reason_code', ARGV[3],
    'actor', ARGV[4], 'at', ARGV[2])
  outcome = 'revoked'
  rec = redis.call('HMGET', KEYS[1], unpack(fields))
end
local out = {outcome}
for i = 1, 10 do
  out[#out + 1] = rec[i] or ''
end
return out
