-- Writes one copy of the operator's session limit unless it holds a newer setting.
-- set-session-limit writes its 16 copies one by one, so two calls at once can interleave;
-- each call's version (the time it began, then a random part: fixed width, so it compares
-- as text) decides every copy the same way, and all copies end with the newest call's.
-- KEYS: 1 the copy
-- ARGV: 1 the call's version, 2 the limit ('' = none)
-- The copy's value: '<version>|<limit>' (a copy written before versions: the bare limit,
-- which any version replaces).
-- Returns 1 (written) or 0 (a newer setting is there).
local current = redis.call('GET', KEYS[1])
if current then
  local version = string.match(current, '^([^|]*)|')
  if version and version >= ARGV[1] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2])
return 1
