-- Revoke one session (idempotent).
-- KEYS: 1 session record, 2 active sessions, 3 revoked sessions, 4 lifecycle, 5 audit
-- ARGV: 1 reason_code, 2 actor, 3 retention ms, 4 lifecycle ttl ms, 5 lifecycle maxlen,
--       6 audit ttl ms, 7 audit maxlen
-- Returns {'not_found'} or {'revoked'|'already', <record fields...>}.
local fields = {'device_session_id', 'user_id', 'client_public_key', 'status', 'created_at',
  'revoked_at', 'revoke_reason_code', 'revoke_actor', 'client_addr', 'user_agent', 'zmember'}
local rec = redis.call('HMGET', KEYS[1], unpack(fields))
if not rec[1] then
  return {'not_found'}
end
local outcome = 'already'
if rec[4] ~= 'revoked' then
  local now = now_ms()
  local c = {now = now, reason = ARGV[1], actor = ARGV[2], retention = ARGV[3],
    lifecycle_ttl = ARGV[4], lifecycle_max = ARGV[5],
    active = KEYS[2], revoked = KEYS[3], lifecycle = KEYS[4]}
  revoke_member(c, rec[11])
  append(KEYS[5], ARGV[6], ARGV[7], 'action', 'revoke_session',
    'device_session_id', rec[1], 'user_id', rec[2], 'reason_code', ARGV[1],
    'actor', ARGV[2], 'at', now)
  outcome = 'revoked'
  rec = redis.call('HMGET', KEYS[1], unpack(fields))
end
local out = {outcome}
for i = 1, 10 do
  out[#out + 1] = rec[i] or ''
end
return out
