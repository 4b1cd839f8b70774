-- A page of a user's audit records at an address, newest first.
-- KEYS[1] audit stream, KEYS[2] address -> user id
-- ARGV: 1 user id, 2 cursor ('' = newest), 3 limit
-- Returns {'user_not_found'} (the address is not the user's and holds no record of the
-- user) or {'ok', next cursor ('' = end), n,
--   then per record: id, number of field/value pairs, fields and values...}.
-- The user's records, and for the address's user also those of the address itself (a
-- block made before anyone logged in names no user): with an external directory an
-- address can pass from one user to another, and each sees only its own. A call looks at
-- a bounded number of records, so a page can be short (even empty) with a cursor.
local owner = redis.call('GET', KEYS[2]) == ARGV[1]
local function theirs(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'user_id' then
      return fields[i + 1] == ARGV[1] or (owner and fields[i + 1] == '')
    end
  end
  return owner
end
local from = '+'
if ARGV[2] ~= '' then
  from = '(' .. ARGV[2]
end
local limit = tonumber(ARGV[3])
local look_cap = limit + 1000
local picked = {}
local looked = 0
local last = ''
while #picked < limit and looked < look_cap do
  local entries = redis.call('XREVRANGE', KEYS[1], from, '-', 'COUNT',
    math.max(limit - #picked, 16))
  if #entries == 0 then
    break
  end
  for _, entry in ipairs(entries) do
    looked = looked + 1
    last = entry[1]
    if theirs(entry[2]) then
      picked[#picked + 1] = entry
    end
    if #picked == limit or looked == look_cap then
      break
    end
  end
  from = '(' .. last
end
if last ~= '' and #redis.call('XREVRANGE', KEYS[1], '(' .. last, '-', 'COUNT', 1) == 0 then
  last = ''
end
if not owner and ARGV[2] == '' and #picked == 0 and last == '' then
  return {'user_not_found'}
end
local out = {'ok', last, #picked}
for _, entry in ipairs(picked) do
  out[#out + 1] = entry[1]
  out[#out + 1] = #entry[2] / 2
  for _, v in ipairs(entry[2]) do
    out[#out + 1] = v
  end
end
return out
