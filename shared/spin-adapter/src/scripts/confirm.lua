-- Confirm a challenge: every check and every write in one atomic step, so the session,
-- its gateway projection and the challenge can never disagree.
-- KEYS: 1 challenge, 2 newest challenge of the address, 3 address blocked flag,
--       4 address -> user id, 5 active sessions (zset), 6 all sessions (zset),
--       7 new session record, 8 new session projection, 9 the address's confirm
--       budget, 10 its consecutive wrong codes, 11 revoked sessions (zset),
--       12 lifecycle stream, 13 audit stream, 14 expired sessions (zset),
--       15 the address's push events stream, 16 its meta, 17 the whole MAC of the
--       address whose user 4 holds
-- ARGV: 1 challenge_id, 2 code_mac, 3 client_public_key, 4 new session id,
--       5 new user id, 6 session limit ('' = none), 7 limit policy, 8 client address,
--       9 user agent, 10 idempotency window (ms),
--       11 user mode: 'local' (ARGV[5] is the id for a new user), 'external' (ARGV[5] is
--       the directory's user id) or 'external_unresolved' (ask for the user first),
--       12 revoked-record retention (ms), 13 lifecycle ttl, 14 lifecycle maxlen,
--       15 audit ttl, 16 audit maxlen, 17/18 emission interval/burst tolerance (ms) of
--       the address's confirm budget, 19 cap of consecutive wrong codes, 20 how long that
--       count is kept (ms), 21 session lifetime (ms), 22 session idle timeout (ms),
--       23 the code's MAC under the previous code key during a rotation ('' = none)
-- Returns {'ok', session_id, 'repeat', user_id} (the same session, for an exact repeat,
-- while it is alive; else {'session_revoked'} or {'session_expired'}),
-- {'ok', session_id, 'created', user_id, evicted, new local user 0/1} (evicted sessions
-- are on the lifecycle and audit streams),
-- {'need_user', email} (only the address's budget spent) or {error, ...} ({'expired'}
-- also for a challenge without the address an external directory needs: its state is
-- then `expired`; {'consumed', 0|1} and {'too_many_attempts', 0|1}: 1 when this call
-- counted a wrong code; {'address_collision'}: the address shares its tag with the
-- address of the user stored under it, and no session is made).
local ch = redis.call('HMGET', KEYS[1], 'state', 'code_mac', 'expires_at', 'attempts',
  'max_attempts', 'confirmed_key', 'session_id', 'user_id', 'email', 'address_mac')
local state = ch[1]
if not state then
  -- Forged or unknown ids cost the address nothing: no budget, no failure count.
  return {'not_found'}
end
local now = now_ms()
-- Where `expire_if_due` (lib.lua) records the end of a session of this address.
local ending = {now = now, active = KEYS[5], expired = KEYS[14], lifecycle = KEYS[12],
  audit = KEYS[13], lifecycle_ttl = ARGV[13], lifecycle_max = ARGV[14],
  audit_ttl = ARGV[15], audit_max = ARGV[16]}

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
-- During a rotation of the code key, a challenge made before the switch holds the MAC
-- under the previous key.
local code_ok = same(ch[2], ARGV[2]) or (ARGV[23] ~= '' and same(ch[2], ARGV[23]))

-- An exact repeat (the code, and the key the challenge was confirmed with) comes before
-- the lockout and the address's budget: a client retrying after a lost answer gets its
-- session even while someone else's wrong codes have locked the address or spent its
-- budget. A repeat hands back the session only while it is alive: never a dead session.
if state == 'confirmed' and code_ok and ch[6] == ARGV[3] then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return {'blocked'}
  end
  -- An end by its lifetime or idle timeout that nobody has read yet is recorded now, as
  -- every read of a session does.
  local record = session_record_key(KEYS[1], ch[7])
  expire_if_due(ending, record)
  local status = redis.call('HGET', record, 'status')
  if status == 'expired' then
    return {'session_expired'}
  elseif status ~= 'active' then
    return {'session_revoked'}
  end
  return {'ok', ch[7], 'repeat', ch[8] or ''}
end

-- Consecutive wrong codes across challenges: at the cap, refuse until the count expires.
local failures = tonumber(redis.call('GET', KEYS[10]) or '0')
if failures >= tonumber(ARGV[19]) then
  return {'locked', math.max(redis.call('PTTL', KEYS[10]), 1)}
end

-- The address's budget, spent only by a confirm that compares a code: of a live
-- challenge, or of one already confirmed (where a wrong code counts). A dead challenge
-- (out of attempts, expired, superseded) answers without it: its answer tells nothing of
-- the code, and spending it would let anyone holding a stale id of an address hold off
-- that address's real logins. A login that asks the user directory spends it in its
-- first call ('external_unresolved') and keeps it spent whatever the directory then
-- says (a refused sign-up, a blocked user, a failure), so that a valid code cannot have
-- the directory asked without bound; the call that follows ('external', made only after
-- that one) spends nothing more. Returns the refusal when it is spent.
local function spend_address_budget()
  if ARGV[11] == 'external' then
    return nil
  end
  local wait = gcra(KEYS[9], now, tonumber(ARGV[17]), tonumber(ARGV[18]), true)
  if wait > 0 then
    return {'rate_limited', wait}
  end
  return nil
end

if state == 'confirmed' then
  local refused = spend_address_budget()
  if refused then
    return refused
  end
  -- Not a repeat: a wrong code counts as one (no code is right any more, and a right
  -- code with another key is refused alike).
  if not code_ok then
    redis.call('INCR', KEYS[10])
    redis.call('PEXPIRE', KEYS[10], ARGV[20])
    return {'consumed', 1}
  end
  return {'consumed', 0}
end
-- From here a second item of 1 says this call counted a wrong code (0: it compared none).
if state == 'exhausted' then
  return {'too_many_attempts', 0}
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
  return {'too_many_attempts', 0}
end
local refused = spend_address_budget()
if refused then
  return refused
end
if not code_ok then
  redis.call('INCR', KEYS[10])
  redis.call('PEXPIRE', KEYS[10], ARGV[20])
  attempts = attempts + 1
  redis.call('HSET', KEYS[1], 'attempts', attempts)
  if attempts >= max_attempts then
    redis.call('HSET', KEYS[1], 'state', 'exhausted')
    return {'too_many_attempts', 1}
  end
  return {'invalid_code', max_attempts - attempts}
end
if state == 'suppressed' or redis.call('EXISTS', KEYS[3]) == 1 then
  return {'blocked'}
end

-- The session limit counts the active sessions the login's user holds on this address.
-- With an external directory an address can pass from one user to another, and the
-- previous user's sessions live on in its sets: they neither count against the new
-- user's limit nor are evicted for it. Before the directory is asked the user is not
-- known, but one it would create has no session here: only a limit of 0 refuses such a
-- login, and it does so now, so that the directory never creates a user for a login the
-- limit refuses.
local limit = tonumber(ARGV[6])
-- The address's user, for a local login (none yet: a new user, with no sessions).
local local_user = nil
-- The whole MAC of the address that user is for: the tag is 64 bits of it, so two
-- addresses can share a tag, and one must never log in as the other's user. (Written by
-- the first login of a challenge that carries the MAC; a user from before that adopts
-- the MAC of its next login.)
local user_address = nil
if ARGV[11] == 'local' then
  local_user = redis.call('GET', KEYS[4])
  if local_user then
    user_address = redis.call('GET', KEYS[17])
    if user_address and ch[10] and user_address ~= ch[10] then
      return {'address_collision'}
    end
  end
end
local mine = {}
if limit and ARGV[11] == 'external_unresolved' then
  if limit == 0 then
    return {'session_limit'}
  end
elseif limit then
  local owner = ARGV[5]
  if ARGV[11] == 'local' then
    owner = local_user
  end
  -- Sessions whose life is over do not count: end them first.
  for _, member in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    if not record_gone(KEYS[5], member) then
      local record = session_record_key(KEYS[5], string.sub(member, 18))
      if not expire_if_due(ending, record) and owner
          and redis.call('HGET', record, 'user_id') == owner then
        mine[#mine + 1] = member
      end
    end
  end
  if #mine >= limit and (ARGV[7] ~= 'evict_oldest' or limit == 0) then
    return {'session_limit'}
  end
end

local user_id
local new_user = false
if ARGV[11] == 'local' then
  user_id = local_user
  if not user_id then
    user_id = ARGV[5]
    new_user = true
  end
elseif ARGV[11] == 'external' then
  user_id = ARGV[5]
  new_user = true
else
  if not ch[9] then
    -- Sent while users lived in Redis, it keeps no address to hand the directory: it
    -- ends here, so that the next send makes a new challenge (the resend interval would
    -- otherwise hand this one back, and mail nothing).
    redis.call('HSET', KEYS[1], 'state', 'expired')
    return {'expired'}
  end
  return {'need_user', ch[9]}
end

local evicted = 0
if limit and #mine >= limit then
  -- evict_oldest (the check above refused anything else): the user's oldest sessions
  -- (the sweep listed them in creation order, each with its record).
  local c = {now = now, reason = 'session_limit_evicted', actor = 'system',
    retention = ARGV[12], lifecycle_ttl = ARGV[13], lifecycle_max = ARGV[14],
    active = KEYS[5], revoked = KEYS[11], lifecycle = KEYS[12]}
  for i = 1, #mine - limit + 1 do
    local sid, owner = revoke_member(c, mine[i])
    evicted = evicted + 1
    append(KEYS[13], ARGV[15], ARGV[16], 'action', 'revoke_session',
      'device_session_id', sid, 'user_id', owner, 'reason_code', 'session_limit_evicted',
      'actor', 'system', 'at', now)
  end
end

-- Members of sessions long over whose records Redis has expired (see prune_gone): up to
-- four per set, more than the one member a login adds.
for _, set in ipairs({KEYS[5], KEYS[6], KEYS[11], KEYS[14]}) do
  prune_gone(set, 4)
end

local member = string.format('%016d|%s', now, ARGV[4])
local expires_at = now + tonumber(ARGV[21])
-- Where the session's push events start: after the address's newest event so far, which
-- was published before the session existed (push_read.lua reads nothing up to it). An id,
-- not a time: an event's id need not follow the clock (a failover to a node behind it).
local events_from = newest_event(KEYS[15], redis.call('HGET', KEYS[16], 'newest'))
redis.call('HSET', KEYS[7],
  'device_session_id', ARGV[4], 'user_id', user_id, 'client_public_key', ARGV[3],
  'status', 'active', 'created_at', now, 'client_addr', ARGV[8],
  'user_agent', ARGV[9], 'challenge_id', ARGV[1], 'zmember', member,
  'expires_at', expires_at, 'last_used_at', now, 'idle_timeout_ms', ARGV[22],
  'events_from', events_from)
redis.call('HSET', KEYS[8],
  'user_id', user_id, 'client_public_key', ARGV[3], 'status', 'active',
  'created_at', now, 'expires_at', expires_at, 'last_used_at', now,
  'idle_timeout_ms', ARGV[22])
-- Record and projection go away on their own, their retention after the session's end:
-- the idle end unless it is used (each use moves it: command_session.lua).
local ends = session_end(expires_at, now, ARGV[22])
redis.call('PEXPIREAT', KEYS[7], ends + tonumber(ARGV[12]))
redis.call('PEXPIREAT', KEYS[8], ends + tonumber(ARGV[12]))
-- The sets keep the member as long as its record could be there: a use moves the record's
-- end, never past the absolute expiry.
local keep_until = expires_at + tonumber(ARGV[12])
add_session(KEYS[5], member, keep_until, now)
add_session(KEYS[6], member, keep_until, now)
append(KEYS[12], ARGV[13], ARGV[14], 'event', 'session_created',
  'device_session_id', ARGV[4], 'user_id', user_id, 'at', now)
append(KEYS[13], ARGV[15], ARGV[16], 'action', 'session_created',
  'device_session_id', ARGV[4], 'user_id', user_id, 'reason_code', 'login',
  'actor', 'user', 'at', now)
if new_user then
  redis.call('SET', KEYS[4], user_id)
end
if ARGV[11] == 'local' and ch[10] and (new_user or not user_address) then
  redis.call('SET', KEYS[17], ch[10])
end
redis.call('DEL', KEYS[10])
redis.call('HSET', KEYS[1], 'state', 'confirmed', 'confirmed_key', ARGV[3],
  'session_id', ARGV[4], 'user_id', user_id, 'confirmed_at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[10])
return {'ok', ARGV[4], 'created', user_id, evicted, new_user and ARGV[11] == 'local' and 1 or 0}
