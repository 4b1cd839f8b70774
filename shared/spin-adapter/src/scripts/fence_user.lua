-- Raises (a block) or lowers (an unblock) the block fence of an external directory's
-- user, and reads the user's address index in the same step. A confirm indexes its
-- address and checks the fence in one step too (index_user.lua), so either the block
-- reads that address here, or the confirm sees the fence: none slips between the
-- directory's answer and the block.
-- KEYS: 1 the user's address index, 2 the user's block fence
-- ARGV: 1 how long the fence stands (ms; '0' lowers it)
-- Returns the address tags (hex) the index holds.
if ARGV[1] == '0' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
end
return redis.call('SMEMBERS', KEYS[1])
