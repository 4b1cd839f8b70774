-- A page of a user's sessions, oldest first.
-- KEYS[1] the sorted set to page (active, revoked or all), KEYS[2] address -> user id
-- ARGV: 1 user id, 2 cursor ('' = start), 3 limit
-- Returns {'user_not_found'} or {'ok', next cursor ('' = end), n, n x 10 record fields}.
-- Members whose record has expired (old revoked sessions) are dropped from the set.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {'user_not_found'}
end
local from = '-'
if ARGV[2] ~= '' then
  from = '(' .. ARGV[2]
end
local limit = tonumber(ARGV[3])
local out = {}
local found = 0
local last = ''
while found < limit do
  local members = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, limit - found)
  if #members == 0 then
    last = ''
    break
  end
  for _, member in ipairs(members) do
    local sid = string.sub(member, 18)
    local rec = redis.call('HMGET', session_record_key(KEYS[1], sid), 'device_session_id', 'user_id',
      'client_public_key', 'status', 'created_at', 'revoked_at', 'revoke_reason_code',
      'revoke_actor', 'client_addr', 'user_agent')
    if rec[1] then
      for i = 1, 10 do
        out[#out + 1] = rec[i] or ''
      end
      found = found + 1
    else
      redis.call('ZREM', KEYS[1], member)
    end
    last = member
  end
  from = '(' .. last
end
if last ~= '' and #redis.call('ZRANGEBYLEX', KEYS[1], '(' .. last, '+', 'LIMIT', 0, 1) == 0 then
  last = ''
end
local head = {'ok', last, found}
for _, v in ipairs(out) do
  head[#head + 1] = v
end
return head
