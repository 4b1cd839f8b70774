-- One read of a subscriber's slot: the session's state (an expiry that is due is recorded,
-- as every read of a session does), the newest lifecycle record (to wait from), and the
-- events after a position for this session (the user's and its own), at most a batch.
-- A session reads nothing published before it was created: a resume from an earlier
-- position starts after the newest event at its creation (its record's events_from; the
-- user's earlier events were never this device's), and what was dropped or aged out before
-- then is no gap of its.
-- KEYS: 1 projection, 2 session record, 3 blocked, 4 active sessions, 5 expired sessions,
--       6 lifecycle, 7 audit, 8 events stream, 9 events meta, 10 address -> user id
-- ARGV: 1 device session id, 2 from ('' = the newest event: only what comes next),
--       3 batch size, 4 lifecycle ttl, 5 lifecycle maxlen, 6 audit ttl, 7 audit maxlen,
--       8 the events' max age (ms)
-- Returns {state, now, ends_at (-1 none), lifecycle id, cursor, gap (0/1), n, then n
--   events of 7 fields: id, event_id, type, device, user_id, at, payload}.
--   state: 'active', 'session_revoked', 'session_expired' or 'user_blocked'.
local now = now_ms()
local c = {now = now, active = KEYS[4], expired = KEYS[5], lifecycle = KEYS[6],
  audit = KEYS[7], lifecycle_ttl = ARGV[4], lifecycle_max = ARGV[5], audit_ttl = ARGV[6],
  audit_max = ARGV[7]}
local state, ends, floor = 'active', -1, false
local p = redis.call('HMGET', KEYS[1], 'status', 'user_id')
local status = p[1]
-- The block of the address is its user's (see command_session.lua).
local function blocked()
  return block_stops(KEYS[3], KEYS[10], p[2])
end
-- A projection without its record (a partial delete, an eviction) or its user proves no
-- session, as in command_session.lua: without the record nothing would tell when it
-- ends, and without the user no block could be checked. A status that is not one of ours
-- fails the read, as it fails a command (a 503 there): never read as active.
if status and status ~= 'active' and status ~= 'revoked' and status ~= 'expired' then
  error('gateway projection ' .. KEYS[1] .. ': unknown status ' .. tostring(status))
end
if status == 'expired' then
  state = 'session_expired'
elseif status ~= 'active' or not p[2] or redis.call('EXISTS', KEYS[2]) == 0 then
  state = 'session_revoked'
elseif expire_if_due(c, KEYS[2]) then
  state = 'session_expired'
elseif blocked() then
  state = 'user_blocked'
else
  local r = redis.call('HMGET', KEYS[2], 'expires_at', 'last_used_at', 'idle_timeout_ms',
    'events_from')
  ends = session_end(r[1], r[2], r[3]) or -1
  -- A record made before events_from was kept has no floor: it may get earlier events,
  -- but never loses one silently (a time would not do: ids need not follow the clock).
  floor = r[4]
end

local last = redis.call('XREVRANGE', KEYS[6], '+', '-', 'COUNT', 1)
local lifecycle = last[1] and last[1][1] or '0-0'

local exists = redis.call('EXISTS', KEYS[8]) == 1
local meta = redis.call('HMGET', KEYS[9], 'dropped', 'newest')
local newest = newest_event(KEYS[8], meta[2])
local from, gap = ARGV[2], 0
if from == '' then
  from = newest
else
  -- A position past the newest is not this stream's.
  local past = id_less(newest, from)
  -- Up to the floor, or the newest event if that is earlier (a stream made anew), so the
  -- cursor never passes it.
  if floor and id_less(from, floor) then
    from = id_less(floor, newest) and floor or newest
  end
  -- Dropped after `from`: what the meta says was dropped, or everything the stream held
  -- when it expired as a whole.
  local lost = exists and meta[1] or (not exists and meta[2]) or nil
  if (lost and id_less(from, lost)) or past then
    gap, from = 1, newest
  end
  -- Events past their max age are gone, though only an append trims them: a stream
  -- nobody publishes to would otherwise keep its last ones until it expires whole, up
  -- to twice their max age.
  local cutoff = now - tonumber(ARGV[8])
  if gap == 0 and cutoff > 0 then
    local old = redis.call('XREVRANGE', KEYS[8], tostring(cutoff - 1), '-', 'COUNT', 1)
    if old[1] and id_less(from, old[1][1]) then
      gap, from = 1, newest
    end
  end
end

local out = {state, now, ends, lifecycle, from, gap, 0}
local n, cursor = 0, from
local entries = redis.call('XRANGE', KEYS[8], '(' .. from, '+', 'COUNT', ARGV[3])
for _, entry in ipairs(entries) do
  cursor = entry[1]
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  if f.device == '' or f.device == ARGV[1] then
    n = n + 1
    for _, v in ipairs({entry[1], f.event_id, f.type, f.device, f.user_id, f.at, f.payload}) do
      out[#out + 1] = v
    end
  end
end
out[5], out[7] = cursor, n
return out
