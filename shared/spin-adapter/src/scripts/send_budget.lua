-- Spend one call of an address's send budget, for a send to another address that reaches
-- the same inbox (a `+` tag, Gmail dots): the inbox's variants share its budget.
-- KEYS[1] the send budget of the inbox's own address (the key `send` spends there)
-- ARGV: 1/2 emission interval/burst tolerance (ms)
-- Returns 0 when spent, else the ms to wait (nothing was written).
return gcra(KEYS[1], now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]), true)
