-- Writes one copy of the operator's session limit unless it holds a newer setting.
-- set-session-limit writes its 16 copies one by one, so two calls at once can interleave;
-- each call's version (from one Redis counter: the order the calls reached Redis in)
-- decides every copy the same way, and all copies end with the newest call's. The copy
-- itself keeps its plain form (the limit, or no key for none), which every instance reads.
-- KEYS: 1 the copy, 2 the version of the copy (same slot)
-- ARGV: 1 the call's version (a whole number), 2 the limit ('' = none)
-- Returns {1} (written) or {0, the copy's version} (a newer setting is there).
-- A copy at the call's own version is written over: the counter never gives a version
-- twice, so that copy was written before the counter went back (a failover, a deleted
-- key), by a call that no longer counts, or by this call's own earlier try.
local current = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if current > tonumber(ARGV[1]) then
  return {0, current}
end
redis.call('SET', KEYS[2], ARGV[1])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return {1}
