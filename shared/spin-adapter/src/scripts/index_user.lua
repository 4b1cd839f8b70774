-- Indexes an address under an external directory's user (before a session of theirs is
-- created there) and says whether a block of the user is under way (fence_user.lua): a
-- confirm whose directory answer predates the block must not create a session the block's
-- read of this index did not see.
-- KEYS: 1 the user's address index, 2 the user's block fence
-- ARGV: 1 the address tag (hex)
-- Returns 1 (indexed) or 0 (indexed, but the user is being blocked: refuse the login).
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
return 1
