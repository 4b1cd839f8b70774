-- The block fence of an external directory's user: raised by a block (which reads the
-- user's address index in the same step), read by an unblock before it changes the
-- directory, and lowered by it after, only if no block has raised it since (else the
-- unblock leaves the addresses' flags as they are). A confirm
-- indexes its address and checks the fence in one step too (index_user.lua), so either
-- the block reads that address here, or the confirm sees the fence: none slips between
-- the directory's answer and the block.
-- The fence's value is its mark: Redis's clock in microseconds at the raise, and always
-- greater than the mark of the fence it replaces.
-- KEYS: 1 the user's address index, 2 the user's block fence
-- ARGV: 1 'raise', 'read' or 'lower'; 2 (raise) how long the fence stands (ms),
--       (lower) the mark read ('' for none)
-- Returns: raise: the address tags (hex) the index holds; read: the mark standing ('' for
-- none), then the tags; lower: 1 (none stands now, or the one read did and is lowered)
-- or 0 (a fence raised since stands, and is left).
local mode = ARGV[1]
if mode == 'lower' then
  local standing = redis.call('GET', KEYS[2])
  if not standing then
    return 1
  end
  if standing == ARGV[2] then
    redis.call('DEL', KEYS[2])
    return 1
  end
  return 0
elseif mode == 'raise' then
  local t = redis.call('TIME')
  local mark = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local old = tonumber(redis.call('GET', KEYS[2]) or '')
  if old and mark <= old then
    mark = old + 1
  end
  redis.call('SET', KEYS[2], string.format('%.0f', mark), 'PX', ARGV[2])
  return redis.call('SMEMBERS', KEYS[1])
end
local reply = redis.call('SMEMBERS', KEYS[1])
table.insert(reply, 1, redis.call('GET', KEYS[2]) or '')
return reply
