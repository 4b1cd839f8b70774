-- One session record, ended first if its life is over.
-- KEYS: 1 session record, 2 active sessions, 3 expired sessions, 4 lifecycle, 5 audit,
--       6 the session's gateway projection
-- ARGV: 1 lifecycle ttl, 2 lifecycle maxlen, 3 audit ttl, 4 audit maxlen
-- Returns {} (no such session) or the RECORD_FIELDS values ('' for absent ones).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local c = {now = now_ms(), active = KEYS[2], expired = KEYS[3], lifecycle = KEYS[4],
  audit = KEYS[5], lifecycle_ttl = ARGV[1], lifecycle_max = ARGV[2], audit_ttl = ARGV[3],
  audit_max = ARGV[4], projection = KEYS[6]}
expire_if_due(c, KEYS[1])
local rec = redis.call('HMGET', KEYS[1], unpack(RECORD_FIELDS))
local out = {}
for i = 1, #RECORD_FIELDS do
  out[i] = rec[i] or ''
end
return out
