-- Revoke one session (idempotent; a session whose life is over is ended as expired).
-- KEYS: 1 session record, 2 active sessions, 3 revoked sessions, 4 lifecycle, 5 audit,
--       6 expired sessions, 7 the session's gateway projection
-- ARGV: 1 reason_code, 2 actor, 3 retention ms, 4 lifecycle ttl ms, 5 lifecycle maxlen,
--       6 audit ttl ms, 7 audit maxlen
-- Returns {'not_found'} or {'revoked'|'already', RECORD_FIELDS values...}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'not_found'}
end
local now = now_ms()
local c = {now = now, reason = ARGV[1], actor = ARGV[2], retention = ARGV[3],
  lifecycle_ttl = ARGV[4], lifecycle_max = ARGV[5], audit_ttl = ARGV[6],
  audit_max = ARGV[7], active = KEYS[2], revoked = KEYS[3], lifecycle = KEYS[4],
  audit = KEYS[5], expired = KEYS[6], projection = KEYS[7]}
expire_if_due(c, KEYS[1])
local state = redis.call('HMGET', KEYS[1], 'status', 'zmember', 'device_session_id', 'user_id')
local outcome = 'already'
if state[1] == 'active' then
  revoke_member(c, state[2])
  append(KEYS[5], ARGV[6], ARGV[7], 'action', 'revoke_session',
    'device_session_id', state[3], 'user_id', state[4], 'reason_code', ARGV[1],
    'actor', ARGV[2], 'at', now)
  outcome = 'revoked'
end
local rec = redis.call('HMGET', KEYS[1], unpack(RECORD_FIELDS))
local out = {outcome}
for i = 1, #RECORD_FIELDS do
  out[#out + 1] = rec[i] or ''
end
return out
