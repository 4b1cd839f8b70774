-- Spend one call of the send budget the variants of an inbox share (a `+` tag, Gmail's
-- forms), kept at the inbox's own address, apart from that address's own budget.
-- KEYS[1] the variants' budget at the inbox's address
-- ARGV: 1/2 emission interval/burst tolerance (ms)
-- Returns 0 when spent, else the ms to wait (nothing was written).
return gcra(KEYS[1], now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]), true)
