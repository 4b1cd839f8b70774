-- Revoke up to ARGV[6] active sessions created at or before a bound, oldest first. A
-- member whose life is already over is ended as expired instead, and one whose record is
-- gone is only dropped: neither is counted as revoked.
-- KEYS: 1 active sessions, 2 address -> user id, 3 revoked sessions, 4 lifecycle, 5 audit,
--       6 expired sessions
-- ARGV: 1 reason_code, 2 actor, 3 retention ms, 4 lifecycle ttl ms, 5 lifecycle maxlen,
--       6 batch size, 7 creation bound (ms; '' = now, for the first batch),
--       8 user id ('' = any), 9 revoked so far, 10 audit action, 11 audit ttl ms,
--       12 audit maxlen
-- Returns {'user_not_found'} or {'ok', revoked, more (0/1), bound}.
if ARGV[8] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[8] then
  return {'user_not_found'}
end
local now = now_ms()
local bound = tonumber(ARGV[7]) or now
local c = {now = now, reason = ARGV[1], actor = ARGV[2], retention = ARGV[3],
  lifecycle_ttl = ARGV[4], lifecycle_max = ARGV[5], audit_ttl = ARGV[11],
  audit_max = ARGV[12], active = KEYS[1], revoked = KEYS[3], lifecycle = KEYS[4],
  audit = KEYS[5], expired = KEYS[6]}
-- Every member created at or before the bound sorts before "<bound>|~".
local upper = '[' .. string.format('%016d|~', bound)
local members = redis.call('ZRANGEBYLEX', KEYS[1], '-', upper, 'LIMIT', 0, ARGV[6])
local revoked = 0
for _, member in ipairs(members) do
  if not record_gone(KEYS[1], member)
      and not expire_if_due(c, session_record_key(KEYS[1], string.sub(member, 18))) then
    revoke_member(c, member)
    revoked = revoked + 1
  end
end
local more = #redis.call('ZRANGEBYLEX', KEYS[1], '-', upper, 'LIMIT', 0, 1)
if more == 0 then
  local user_id = redis.call('GET', KEYS[2]) or ''
  append(KEYS[5], ARGV[11], ARGV[12], 'action', ARGV[10], 'user_id', user_id,
    'revoked_count', tonumber(ARGV[9]) + revoked, 'reason_code', ARGV[1],
    'actor', ARGV[2], 'at', now)
end
return {'ok', revoked, more, bound}
