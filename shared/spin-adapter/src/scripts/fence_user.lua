-- Raises (a block) or lowers (an unblock) the block fence of an external directory's
-- user, and reads the user's address index in the same step. A confirm indexes its
-- address and checks the fence in one step too (index_user.lua), so either the block
-- reads that address here, or the confirm sees the fence: none slips between the
-- directory's answer and the block.
-- KEYS: 1 the user's address index, 2 the user's block fence
-- ARGV: 1 how long the fence stands (ms; '0' lowers it)
-- Returns 1 if a fence stood before this change (else 0), then the address tags (hex)
-- the index holds.
local stood
if ARGV[1] == '0' then
  stood = redis.call('DEL', KEYS[2])
else
  stood = redis.call('EXISTS', KEYS[2])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
end
local reply = redis.call('SMEMBERS', KEYS[1])
table.insert(reply, 1, stood)
return reply
