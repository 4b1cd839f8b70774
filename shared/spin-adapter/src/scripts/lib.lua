-- Shared helpers, prepended to the scripts that change sessions.
-- Session ids sit in sorted sets as '<created_at, 16 digits>|<id>' with score 0, so
-- lexicographic order is creation order and pages can resume after any member.

local function append(stream, ttl, maxlen, ...)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', ...)
  redis.call('PEXPIRE', stream, ttl)
end

-- Revokes the session behind `member`: record, projection, sets, lifecycle record.
-- `c` holds prefix, now, reason, actor, retention, lifecycle key/ttl/maxlen.
local function revoke_member(c, member)
  local sid = string.sub(member, 18)
  local record = c.prefix .. 's:' .. sid
  local projection = c.prefix .. 'gw:' .. sid
  local user_id = redis.call('HGET', record, 'user_id') or ''
  redis.call('HSET', record, 'status', 'revoked', 'revoked_at', c.now,
    'revoke_reason_code', c.reason, 'revoke_actor', c.actor)
  redis.call('HSET', projection, 'status', 'revoked', 'revoked_at', c.now)
  redis.call('PEXPIRE', record, c.retention)
  redis.call('PEXPIRE', projection, c.retention)
  redis.call('ZREM', c.prefix .. 'sessions:active', member)
  redis.call('ZADD', c.prefix .. 'sessions:revoked', 0, member)
  append(c.prefix .. 'lifecycle', c.lifecycle_ttl, c.lifecycle_max,
    'event', 'session_revoked', 'device_session_id', sid, 'user_id', user_id,
    'reason_code', c.reason, 'actor', c.actor, 'at', c.now)
  return sid
end
