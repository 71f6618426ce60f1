local n = tonumber(ARGV[1])
local base = nil
local sets = 0
local seen = {}
local versions = {}
for i = 1, n do
  local key, fkey, a = KEYS[2 * i], KEYS[2 * i + 1], 1 + (i - 1) * 6
  local kind, etag, conc, fence = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local cur = seen[key]
  if cur == nil then
    cur = {}
    seen[key] = cur
  end
  if fence ~= '' then
    if cur.fence == nil then
      local f = redis.call('GET', fkey)
      cur.fence = f and tonumber(f) or 0
    end
    if tonumber(fence) < cur.fence then
      return { 'FENCED', key, fence, tostring(cur.fence) }
    end
    if tonumber(fence) > cur.fence then cur.fence = tonumber(fence) end
  end
  if conc ~= 'l' and (etag ~= '' or conc == 'f') then
    if cur.ver == nil then
      local v = redis.call('HGET', key, 'version')
      cur.ver = v and tostring(v) or false
    elseif type(cur.ver) == 'number' then
      if base == nil then base = tonumber(redis.call('GET', KEYS[1]) or '0') end
      cur.ver = tostring(base + cur.ver)
    end
    if etag ~= '' then
      if cur.ver ~= etag then return { 'MISMATCH', key } end
    elseif cur.ver then
      return { 'MISMATCH', key }
    end
  end
  if kind == 's' then
    sets = sets + 1
    versions[i] = sets
    cur.ver = sets
  else
    cur.ver = false
  end
end
if sets > 0 then
  base = tonumber(redis.call('INCRBY', KEYS[1], sets)) - sets
end
for i = 1, n do
  local key, fkey, a = KEYS[2 * i], KEYS[2 * i + 1], 1 + (i - 1) * 6
  local kind, fence, ttl = ARGV[a + 1], ARGV[a + 4], ARGV[a + 5]
  if kind == 's' then
    redis.call('HSET', key, 'data', ARGV[a + 6], 'version', base + versions[i])
    if ttl ~= '0' then redis.call('PEXPIRE', key, ttl) else redis.call('PERSIST', key) end
  else
    redis.call('DEL', key)
  end
  if fence ~= '' then
    local f = tonumber(redis.call('GET', fkey) or '0')
    if tonumber(fence) > f then redis.call('SET', fkey, fence) end
  end
end
local m = #ARGV - 1 - 6 * n
if m > 0 then
  local ids, data = KEYS[2 * n + 2], KEYS[2 * n + 3]
  for j = 1, m do
    local id = tostring(redis.call('HINCRBY', data, 'next', 1))
    redis.call('HSET', data, id, ARGV[1 + 6 * n + j])
    redis.call('ZADD', ids, id, id)
  end
end
return { 'OK' }
