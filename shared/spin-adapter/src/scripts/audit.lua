-- A page of an address's audit records, newest first.
-- KEYS[1] audit stream, KEYS[2] address -> user id
-- ARGV: 1 user id, 2 cursor ('' = newest), 3 limit
-- Returns {'user_not_found'} or {'ok', next cursor ('' = end), n,
--   then per record: id, number of field/value pairs, fields and values...}.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {'user_not_found'}
end
local from = '+'
if ARGV[2] ~= '' then
  from = '(' .. ARGV[2]
end
local limit = tonumber(ARGV[3])
local entries = redis.call('XREVRANGE', KEYS[1], from, '-', 'COUNT', limit)
local out = {'ok', '', #entries}
for _, entry in ipairs(entries) do
  out[#out + 1] = entry[1]
  out[#out + 1] = #entry[2] / 2
  for _, v in ipairs(entry[2]) do
    out[#out + 1] = v
  end
end
if #entries == limit then
  local last = entries[#entries][1]
  if #redis.call('XREVRANGE', KEYS[1], '(' .. last, '-', 'COUNT', 1) > 0 then
    out[2] = last
  end
end
return out
