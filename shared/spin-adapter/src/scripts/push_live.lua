-- A push stream opens or ends, in the client shard its id hashes to: its place in the
-- shard's set of live streams, and the metrics its request counted so far (the gauge of
-- open streams is the scrape's count of members not yet lapsed).
-- KEYS: 1 the shard's metrics hash, 2 the shard's live streams
-- ARGV: 1 'open' or 'end', 2 the stream ('<session>/<request id>'), 3 ms an open stream
--       counts for unless it ends (its maximum duration and the grace), then
--       (when, field, amount) triples, all 'always'
local now = now_ms()
if ARGV[1] == 'open' then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
elseif ARGV[1] == 'end' then
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  error('push_live: unknown step ' .. tostring(ARGV[1]))
end
-- Streams whose instance died never end here: they lapse.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
count_metrics(KEYS[1], 4, '')
return 'ok'
