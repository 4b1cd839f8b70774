-- A page of a user's sessions, oldest first; sessions whose life is over are ended as
-- they are read (so an `active` page never holds one).
-- KEYS: 1 the sorted set to page (active, revoked, expired or all), 2 address -> user id,
--       3 active sessions, 4 expired sessions, 5 lifecycle, 6 audit
-- ARGV: 1 user id, 2 cursor ('' = start), 3 limit, 4 lifecycle ttl, 5 lifecycle maxlen,
--       6 audit ttl, 7 audit maxlen
-- Returns {'user_not_found'} (the address is not the user's and holds no session of the
-- user) or {'ok', next cursor ('' = end), n, n x RECORD_FIELDS}.
-- Members whose record has expired (old ended sessions) are dropped from the set.
-- Only the user's own sessions are listed: with an external directory an address can pass
-- from one user to another, and the sessions of both live on in its sets. A call looks at
-- a bounded number of members, so a page can be short (even empty) with a cursor.
local owner = redis.call('GET', KEYS[2]) == ARGV[1]
local c = {now = now_ms(), active = KEYS[3], expired = KEYS[4], lifecycle = KEYS[5],
  audit = KEYS[6], lifecycle_ttl = ARGV[4], lifecycle_max = ARGV[5], audit_ttl = ARGV[6],
  audit_max = ARGV[7]}
-- An `expired` listing first ends the address's active sessions whose life is over (on
-- its first page, looking at up to 1,000 of them), so what it lists does not depend on
-- whether anything has read a session since it ended.
if KEYS[1] == KEYS[4] and ARGV[2] == '' then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, 999)) do
    if not record_gone(KEYS[3], member) then
      expire_if_due(c, session_record_key(KEYS[3], string.sub(member, 18)))
    end
  end
end
local from = '-'
if ARGV[2] ~= '' then
  from = '(' .. ARGV[2]
end
local limit = tonumber(ARGV[3])
local look_cap = limit + 1000
local out = {}
local found = 0
local looked = 0
local last = ''
while found < limit and looked < look_cap do
  local members = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0,
    math.max(limit - found, 16))
  if #members == 0 then
    break
  end
  for _, member in ipairs(members) do
    looked = looked + 1
    last = member
    local record = session_record_key(KEYS[1], string.sub(member, 18))
    if redis.call('EXISTS', record) == 0 then
      redis.call('ZREM', KEYS[1], member)
    elseif redis.call('HGET', record, 'user_id') == ARGV[1]
        and not (expire_if_due(c, record) and KEYS[1] == KEYS[3]) then
      local rec = redis.call('HMGET', record, unpack(RECORD_FIELDS))
      for i = 1, #RECORD_FIELDS do
        out[#out + 1] = rec[i] or ''
      end
      found = found + 1
    end
    if found == limit or looked == look_cap then
      break
    end
  end
  from = '(' .. last
end
if last ~= '' and #redis.call('ZRANGEBYLEX', KEYS[1], '(' .. last, '+', 'LIMIT', 0, 1) == 0 then
  last = ''
end
if not owner and ARGV[2] == '' and found == 0 and last == '' then
  return {'user_not_found'}
end
local head = {'ok', last, found}
for _, v in ipairs(out) do
  head[#head + 1] = v
end
return head
