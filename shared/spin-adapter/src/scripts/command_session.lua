-- The second step of a signed command, in the session's slot (the address tag its id
-- carries). In order: the command is still fresh by this node's clock too (on a cluster
-- the client step ran on another node; the reservation below must outlive the window by
-- the clock that times it), the projection exists, the key is the bound one, the request
-- id is not reserved already (a copy of a command that went ahead is `replayed` whatever
-- became of the session since: its answer must never say the command did not run), the
-- session is active, its record exists and it is not past its end (expiry recorded if
-- due), the request id is new (reserved now), the address's block does not stop the
-- session's user (the id stays reserved: a command refused as blocked never runs later,
-- even after an unblock), every budget allows the command, the session has room for the
-- push stream the command opens (a subscribe: claims past their end and grace are
-- dropped first), then every budget is spent, the stream claimed
-- (member: the request id, score: when the stream ends by itself) and the last use
-- recorded. Nothing changes before the reservation; a refusal after it spends nothing
-- else.
-- KEYS: 1 projection, 2 record, 3 blocked, 4 replay reservation, 5 session budget,
--       6 user budget, 7 message-type budget, 8 active, 9 expired, 10 lifecycle, 11 audit,
--       12 the session's open streams, 13 address -> user id
-- ARGV: 1 client_public_key, 2 replay ttl ms, 3/4 session interval/tolerance,
--       5/6 user interval/tolerance, 7/8 message-type interval/tolerance,
--       9 '1' when the message type is known (routed or reserved), 10 lifecycle ttl,
--       11 lifecycle maxlen, 12 audit ttl, 13 audit maxlen, 14 timestamp_ms, 15 window ms,
--       16 request id, 17 max open streams ('0': the command opens none),
--       18 ms until the stream ends by itself, 19 grace ms, 20 retention after the
--       session's end (ms)
-- Returns {code, now[, more]}: 'stale', 'unknown_session', 'key_mismatch';
--   {'revoked' | 'expired' | 'blocked' | 'replayed', now, user_id},
--   {'rate_limited', now, wait_ms, budget, user_id},
--   {'too_many_streams', now, wait_ms, user_id}, {'admitted', now, user_id}
--   (user_id: the session's, for the request's log line; nil on 'replayed', 'revoked'
--   or 'expired' for a projection without one)
local now = now_ms()
if math.abs(now - tonumber(ARGV[14])) > tonumber(ARGV[15]) then
  return {'stale', now}
end
local p = redis.call('HMGET', KEYS[1], 'client_public_key', 'status', 'user_id')
if not p[1] then return {'unknown_session', now} end
if p[1] ~= ARGV[1] then return {'key_mismatch', now} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'replayed', now, p[3]} end
if p[2] == 'revoked' then return {'revoked', now, p[3]} end
if p[2] == 'expired' then return {'expired', now, p[3]} end
if p[2] ~= 'active' then
  error('gateway projection ' .. KEYS[1] .. ': unknown status ' .. tostring(p[2]))
end
-- The record is the source of truth: a projection left without it (a partial delete, an
-- eviction) proves no session, and recording a use would make a record that never expires.
-- Nor does a projection without its user: the block check below needs one, and failing
-- there would leave the request id reserved for a command that never ran.
if redis.call('EXISTS', KEYS[2]) == 0 or not p[3] then return {'unknown_session', now} end
local c = {now = now, active = KEYS[8], expired = KEYS[9], lifecycle = KEYS[10],
  audit = KEYS[11], lifecycle_ttl = ARGV[10], lifecycle_max = ARGV[11],
  audit_ttl = ARGV[12], audit_max = ARGV[13]}
if expire_if_due(c, KEYS[2]) then return {'expired', now, p[3]} end
-- (Checked above in this same atomic call: NX cannot fail here, and guards the order.)
if not redis.call('SET', KEYS[4], now, 'NX', 'PX', ARGV[2]) then
  return {'replayed', now, p[3]}
end
-- The block of the address is its user's: with an external directory the address may
-- have passed to another user, and this session may be the previous user's (whose own
-- block revoked its sessions here).
if block_stops(KEYS[3], KEYS[13], p[3]) then return {'blocked', now, p[3]} end
local budgets = {{KEYS[5], ARGV[3], ARGV[4], 'session'}, {KEYS[6], ARGV[5], ARGV[6], 'user'}}
if ARGV[9] == '1' then
  budgets[3] = {KEYS[7], ARGV[7], ARGV[8], 'message_type'}
end
for _, b in ipairs(budgets) do
  local wait = gcra(b[1], now, tonumber(b[2]), tonumber(b[3]), false)
  if wait > 0 then return {'rate_limited', now, wait, b[4], p[3]} end
end
local max_streams = tonumber(ARGV[17])
local grace = tonumber(ARGV[19])
if max_streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[12], '-inf', '(' .. (now - grace))
  if redis.call('ZCARD', KEYS[12]) >= max_streams then
    -- When a place frees by itself: the oldest claim's stream ends at its score; one past
    -- its score (its instance died, or its client stalls) stops counting after the grace,
    -- unless a later stream ends sooner.
    local oldest = tonumber(redis.call('ZRANGE', KEYS[12], 0, 0, 'WITHSCORES')[2])
    local wait = oldest - now
    if wait <= 0 then
      wait = oldest + grace - now
      local live = redis.call('ZRANGEBYSCORE', KEYS[12], '(' .. now, '+inf', 'WITHSCORES',
        'LIMIT', 0, 1)
      if live[2] then wait = math.min(wait, tonumber(live[2]) - now) end
    end
    -- (At least 1 ms: a claim exactly at the grace's edge survives the cut above and
    -- would say "retry now" while the place is still taken.)
    return {'too_many_streams', now, math.max(wait, 1), p[3]}
  end
end
for _, b in ipairs(budgets) do
  gcra(b[1], now, tonumber(b[2]), tonumber(b[3]), true)
end
if max_streams > 0 then
  local ends = now + tonumber(ARGV[18])
  redis.call('ZADD', KEYS[12], ends, ARGV[16])
  -- The set lives as long as its last claim can count.
  local last = redis.call('ZRANGE', KEYS[12], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[12], tonumber(last[2]) - now + grace)
end
redis.call('HSET', KEYS[1], 'last_used_at', now)
redis.call('HSET', KEYS[2], 'last_used_at', now)
-- Record and projection are kept their retention after the session's end, which this
-- use has moved: a session that ends idle goes that long after its idle end, not after
-- its absolute lifetime (its client address and agent with it).
local life = redis.call('HMGET', KEYS[2], 'expires_at', 'idle_timeout_ms')
local ends = session_end(life[1], now, life[2])
if ends then
  redis.call('PEXPIREAT', KEYS[1], ends + tonumber(ARGV[20]))
  redis.call('PEXPIREAT', KEYS[2], ends + tonumber(ARGV[20]))
end
return {'admitted', now, p[3]}
