-- Revoke the active sessions created at or before a bound, oldest first, looking at up to
-- ARGV[6] of them after a cursor. A member whose life is already over is ended as expired
-- instead, and one whose record is gone is only dropped: neither is counted as revoked.
-- With a user, only that user's sessions are revoked: with an external directory an
-- address can pass to another user, and the sessions of both live in its sets. Without
-- one (a block by address), the address's user's: the user its block flag suspends (see
-- command_session.lua), or every session when the address has no user.
-- KEYS: 1 active sessions, 2 address -> user id, 3 revoked sessions, 4 lifecycle, 5 audit,
--       6 expired sessions
-- ARGV: 1 reason_code, 2 actor, 3 retention ms, 4 lifecycle ttl ms, 5 lifecycle maxlen,
--       6 batch size, 7 creation bound (ms; '' = now, for the call's first batch; an
--       address's first batch moves it to its newest session if that is later),
--       8 user id ('' = the address's user, or any when it has none), 9 revoked so far,
--       10 audit action, 11 audit ttl ms, 12 audit maxlen, 13 the last member the previous batch looked at ('' = first batch),
--       14 the user's active sessions earlier batches looked at
-- Returns {'user_not_found'} (the address is not the user's and, once the last batch has
-- looked, holds none of the user's active sessions: nothing of the user's changed) or
-- {'ok', revoked, more (0/1), bound, cursor for the next batch, the user's active
-- sessions this batch looked at}.
local owner = redis.call('GET', KEYS[2])
local foreign = ARGV[8] ~= '' and owner ~= ARGV[8]
-- Whose sessions go ('' = every one).
local whose = ARGV[8]
if whose == '' then
  whose = owner or ''
end
local now = now_ms()
local bound = tonumber(ARGV[7]) or now
if ARGV[13] == '' then
  -- This address's first batch: the bound is never before the newest session here. One
  -- made on a node whose clock ran ahead of this one's (before a failover, a clock step)
  -- is from before the call too, and must not be spared; a login made here after the
  -- call began may go with it (the safe side). Later batches keep the bound returned.
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1)[1]
  local created = newest and tonumber(string.sub(newest, 1, 16))
  if created and created > bound then bound = created end
end
local c = {now = now, reason = ARGV[1], actor = ARGV[2], retention = ARGV[3],
  lifecycle_ttl = ARGV[4], lifecycle_max = ARGV[5], audit_ttl = ARGV[11],
  audit_max = ARGV[12], active = KEYS[1], revoked = KEYS[3], lifecycle = KEYS[4],
  audit = KEYS[5], expired = KEYS[6]}
-- Every member created at or before the bound sorts before "<bound>|~".
local upper = '[' .. string.format('%016d|~', bound)
local from = '-'
if ARGV[13] ~= '' then
  from = '(' .. ARGV[13]
end
local members = redis.call('ZRANGEBYLEX', KEYS[1], from, upper, 'LIMIT', 0, ARGV[6])
local revoked = 0
local theirs = 0
local last = ARGV[13]
for _, member in ipairs(members) do
  last = member
  if not record_gone(KEYS[1], member) then
    local record = session_record_key(KEYS[1], string.sub(member, 18))
    if whose == '' or redis.call('HGET', record, 'user_id') == whose then
      theirs = theirs + 1
      if not expire_if_due(c, record) then
        revoke_member(c, member)
        revoked = revoked + 1
      end
    end
  end
end
local more = 0
if last ~= '' then
  more = #redis.call('ZRANGEBYLEX', KEYS[1], '(' .. last, upper, 'LIMIT', 0, 1)
end
-- Decided at the last batch, however many sessions of other users came before it.
if foreign and more == 0 and tonumber(ARGV[14]) + theirs == 0 then
  return {'user_not_found'}
end
-- Every batch that revoked something audits what it revoked, in the script that did it,
-- so a call that stops between batches (an error, an instance ended) leaves no revocation
-- unaudited; the last batch of a call that revoked nothing audits the call (not on an
-- address that is not the user's).
local total = tonumber(ARGV[9]) + revoked
if revoked > 0 or (more == 0 and total == 0 and not foreign) then
  append(KEYS[5], ARGV[11], ARGV[12], 'action', ARGV[10], 'user_id', whose,
    'revoked_count', revoked, 'reason_code', ARGV[1],
    'actor', ARGV[2], 'at', now)
end
return {'ok', revoked, more, bound, last, theirs}
