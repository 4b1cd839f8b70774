-- Record a delivery outcome: only a `pending` challenge moves (to ARGV[1]). Called for a
-- failed mail only: a mailed challenge stays `pending`, which send.lua reads as sent.
-- KEYS[1] challenge. Returns 1 if it moved, else 0.
if redis.call('HGET', KEYS[1], 'state') == 'pending' then
  redis.call('HSET', KEYS[1], 'state', ARGV[1])
  return 1
end
return 0
