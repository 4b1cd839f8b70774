-- Confirm a challenge: every check and every write in one atomic step, so the session,
-- its gateway projection and the challenge can never disagree.
-- KEYS: 1 challenge, 2 newest challenge of the address, 3 address blocked flag,
--       4 address -> user id, 5 active sessions (zset), 6 all sessions (zset),
--       7 new session record, 8 new session projection
-- ARGV: 1 challenge_id, 2 code_mac, 3 client_public_key, 4 now (ms), 5 new session id,
--       6 new user id, 7 session limit ('' = none), 8 limit policy, 9 client address,
--       10 user agent, 11 idempotency window (ms), 12 key prefix of this address,
--       13 user mode: 'local' (ARGV[6] is the id for a new user), 'external' (ARGV[6] is
--       the directory's user id) or 'external_unresolved' (ask for the user first),
--       14 the new session's sorted-set member, 15 revoked-record retention (ms),
--       16 lifecycle ttl, 17 lifecycle maxlen, 18 audit ttl, 19 audit maxlen,
--       20/21 emission interval/burst tolerance (ms) of the address's confirm budget,
--       22 cap of consecutive wrong codes, 23 how long that count is kept (ms)
-- KEYS (continued): 9 the address's confirm budget, 10 its consecutive wrong codes
-- (lib.lua is prepended.)
-- Returns {'ok', session_id, 'created'|'replay', user_id, evicted...},
-- {'need_user', email} (nothing changed) or {error, ...}.
local ch = redis.call('HMGET', KEYS[1], 'state', 'code_mac', 'expires_at', 'attempts',
  'max_attempts', 'confirmed_key', 'session_id', 'user_id', 'email')
local state = ch[1]
if not state then
  -- Forged or unknown ids cost the address nothing: no budget, no failure count.
  return {'not_found'}
end
local now = tonumber(ARGV[4])

-- Consecutive wrong codes across challenges: at the cap, refuse until the count expires.
local failures = tonumber(redis.call('GET', KEYS[10]) or '0')
if failures >= tonumber(ARGV[22]) then
  return {'locked', math.max(redis.call('PTTL', KEYS[10]), 1)}
end

-- The address's budget (GCRA), spent only now that the challenge is known to exist.
local interval = tonumber(ARGV[20])
local tolerance = tonumber(ARGV[21])
local tat = tonumber(redis.call('GET', KEYS[9]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {'rate_limited', tat - now - tolerance}
end
redis.call('SET', KEYS[9], tat + interval, 'PX', tat + interval - now)

-- Constant-time comparison: no early exit, every byte is looked at.
local function same(a, b)
  if #a ~= #b then
    return false
  end
  local diff = 0
  for i = 1, #a do
    diff = bit.bor(diff, bit.bxor(string.byte(a, i), string.byte(b, i)))
  end
  return diff == 0
end
local code_ok = same(ch[2], ARGV[2])

if state == 'confirmed' then
  if code_ok and ch[6] == ARGV[3] then
    -- A repeat hands back the session only while it is alive: never a dead session.
    if redis.call('EXISTS', KEYS[3]) == 1 then
      return {'blocked'}
    end
    if redis.call('HGET', ARGV[12] .. 's:' .. ch[7], 'status') ~= 'active' then
      return {'session_revoked'}
    end
    return {'ok', ch[7], 'replay', ch[8]}
  end
  return {'consumed'}
end
if state == 'exhausted' then
  return {'too_many_attempts'}
end
if state == 'expired' or now >= tonumber(ch[3]) then
  return {'expired'}
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {'superseded'}
end
local attempts = tonumber(ch[4])
local max_attempts = tonumber(ch[5])
if attempts >= max_attempts then
  return {'too_many_attempts'}
end
if not code_ok then
  redis.call('INCR', KEYS[10])
  redis.call('PEXPIRE', KEYS[10], ARGV[23])
  attempts = attempts + 1
  redis.call('HSET', KEYS[1], 'attempts', attempts)
  if attempts >= max_attempts then
    redis.call('HSET', KEYS[1], 'state', 'exhausted')
    return {'too_many_attempts'}
  end
  return {'invalid_code', max_attempts - attempts}
end
if state == 'suppressed' or redis.call('EXISTS', KEYS[3]) == 1 then
  return {'blocked'}
end

local user_id
local new_user = false
if ARGV[13] == 'local' then
  user_id = redis.call('GET', KEYS[4])
  if not user_id then
    user_id = ARGV[6]
    new_user = true
  end
elseif ARGV[13] == 'external' then
  user_id = ARGV[6]
  new_user = true
else
  return {'need_user', ch[9]}
end

local evicted = {}
local limit = tonumber(ARGV[7])
if limit then
  local active = redis.call('ZCARD', KEYS[5])
  if active >= limit then
    if ARGV[8] ~= 'evict_oldest' or limit == 0 then
      return {'session_limit'}
    end
    local c = {prefix = ARGV[12], now = ARGV[4], reason = 'session_limit_evicted',
      actor = 'system', retention = ARGV[15], lifecycle_ttl = ARGV[16],
      lifecycle_max = ARGV[17]}
    for _, member in ipairs(redis.call('ZRANGE', KEYS[5], 0, active - limit)) do
      local sid = revoke_member(c, member)
      append(ARGV[12] .. 'audit', ARGV[18], ARGV[19], 'action', 'revoke_session',
        'device_session_id', sid, 'user_id', user_id, 'reason_code', 'session_limit_evicted',
        'actor', 'system', 'at', ARGV[4])
      evicted[#evicted + 1] = sid
    end
  end
end

redis.call('HSET', KEYS[7],
  'device_session_id', ARGV[5], 'user_id', user_id, 'client_public_key', ARGV[3],
  'status', 'active', 'created_at', ARGV[4], 'client_addr', ARGV[9],
  'user_agent', ARGV[10], 'challenge_id', ARGV[1], 'zmember', ARGV[14])
redis.call('HSET', KEYS[8],
  'user_id', user_id, 'client_public_key', ARGV[3], 'status', 'active',
  'created_at', ARGV[4])
redis.call('ZADD', KEYS[5], 0, ARGV[14])
redis.call('ZADD', KEYS[6], 0, ARGV[14])
append(ARGV[12] .. 'lifecycle', ARGV[16], ARGV[17], 'event', 'session_created',
  'device_session_id', ARGV[5], 'user_id', user_id, 'at', ARGV[4])
append(ARGV[12] .. 'audit', ARGV[18], ARGV[19], 'action', 'session_created',
  'device_session_id', ARGV[5], 'user_id', user_id, 'reason_code', 'login',
  'actor', 'user', 'at', ARGV[4])
if new_user then
  redis.call('SET', KEYS[4], user_id)
end
redis.call('DEL', KEYS[10])
redis.call('HSET', KEYS[1], 'state', 'confirmed', 'confirmed_key', ARGV[3],
  'session_id', ARGV[5], 'user_id', user_id, 'confirmed_at', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[11])
local out = {'ok', ARGV[5], 'created', user_id}
for _, sid in ipairs(evicted) do
  out[#out + 1] = sid
end
return out
