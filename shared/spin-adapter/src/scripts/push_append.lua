-- Appends one published event to an address slot's event stream, if the slot's address
-- belongs to the user or holds an active session of the user (or the device session is
-- the user's), then trims the stream to its length and age and remembers the newest id
-- it dropped, so a resume from before it learns of the gap.
-- KEYS: 1 events stream, 2 events meta (hash: dropped, newest), 3 the address's user,
--       4 the device session's projection (the user key again for a user event),
--       5 the address's active sessions
-- ARGV: 1 event_id, 2 event_type, 3 device session id ('' = every session of the user),
--       4 user_id, 5 payload, 6 max length, 7 max age ms, 8 meta ttl ms
-- Returns {'appended', id}, {'unknown_user'} or {'unknown_session'} (none of the user's,
-- or not active, or past its end); nothing is written
-- unless appended.
local now = now_ms()
-- Whether a session's life is over by its fields (expires_at, last_used_at,
-- idle_timeout_ms), though no read has recorded it yet: such a session has no stream to
-- reach (its next read ends it), as every other path that reads a session says.
local function ended(life)
  local ends = session_end(life[1], life[2], life[3])
  return ends ~= nil and now >= ends
end
-- Whether the address still holds a live session of the user although it is no longer
-- theirs: with an external directory an address can pass to another user, and the
-- previous user's sessions live on here (older than the new user's, so among the first
-- members). Readers skip events of another user, so both users can share the stream.
local function holds_session_of(user)
  for _, member in ipairs(redis.call('ZRANGE', KEYS[5], 0, 199)) do
    local record = session_record_key(KEYS[5], string.sub(member, 18))
    local r = redis.call('HMGET', record, 'user_id', 'expires_at', 'last_used_at',
      'idle_timeout_ms')
    if r[1] == user and not ended({r[2], r[3], r[4]}) then return true end
  end
  return false
end
if ARGV[3] == '' then
  if redis.call('GET', KEYS[3]) ~= ARGV[4] and not holds_session_of(ARGV[4]) then
    return {'unknown_user'}
  end
else
  -- A device event is for a live session of the user: a revoked or ended one's stream is
  -- over.
  local s = redis.call('HMGET', KEYS[4], 'user_id', 'status', 'expires_at', 'last_used_at',
    'idle_timeout_ms')
  if s[1] ~= ARGV[4] or s[2] ~= 'active' or ended({s[3], s[4], s[5]}) then
    return {'unknown_session'}
  end
end
-- The stream expired as a whole (nothing published for its max age): everything up to the
-- newest id the meta remembers is gone, so a resume from before it must learn of the gap
-- once the stream exists again.
if redis.call('EXISTS', KEYS[1]) == 0 then
  local newest = redis.call('HGET', KEYS[2], 'newest')
  local before = redis.call('HGET', KEYS[2], 'dropped')
  if newest and (not before or id_less(before, newest)) then
    redis.call('HSET', KEYS[2], 'dropped', newest)
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[1], 'type', ARGV[2],
  'device', ARGV[3], 'user_id', ARGV[4], 'at', now, 'payload', ARGV[5])
local dropped = nil
local max_len = tonumber(ARGV[6])
local len = redis.call('XLEN', KEYS[1])
if len > max_len then
  -- At most 100 entries a call: the entries come whole, payloads and all, so after an
  -- operator lowered push_stream_max_len (or during a rolling deploy that does) one call
  -- would otherwise load every entry over the new length into Redis's memory and hold
  -- Redis for as long. Later appends trim the rest.
  local n = math.min(len - max_len, 100)
  local over = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', n + 1)
  dropped = over[n][1]
  redis.call('XTRIM', KEYS[1], 'MINID', over[n + 1][1])
end
local cutoff = now - tonumber(ARGV[7])
if cutoff > 0 then
  local old = redis.call('XREVRANGE', KEYS[1], tostring(cutoff - 1), '-', 'COUNT', 1)
  if old[1] then
    if not dropped or id_less(dropped, old[1][1]) then dropped = old[1][1] end
    redis.call('XTRIM', KEYS[1], 'MINID', tostring(cutoff))
  end
end
if dropped then
  local before = redis.call('HGET', KEYS[2], 'dropped')
  if not before or id_less(before, dropped) then
    redis.call('HSET', KEYS[2], 'dropped', dropped)
  end
end
redis.call('HSET', KEYS[2], 'newest', id)
-- Entries live at most max age; the meta outlives the stream, so a resume after the
-- whole stream expired still learns of the gap.
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
return {'appended', id}
