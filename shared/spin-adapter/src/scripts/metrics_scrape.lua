-- One shard's part of a scrape. KEYS: 1 the shard's metrics hash, 2 its live push streams.
-- Returns {live streams not lapsed, field, count, field, count, ...}.
local live = redis.call('ZCOUNT', KEYS[2], now_ms(), '+inf')
local fields = redis.call('HGETALL', KEYS[1])
table.insert(fields, 1, live)
return fields
