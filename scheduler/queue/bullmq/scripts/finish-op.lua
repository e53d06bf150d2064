-- Finishes an operation; the first finisher wins. Frees the merge key when it still names this
-- operation.
-- KEYS: op key. ARGV: events channel, op name, ttl ms, merge key prefix, now, fields...
-- Returns 1, or 0 when it was done already.
local f = redis.call('HMGET', KEYS[1], 'done', 'mergeKey', 'worker')
if f[1] ~= '0' then return 0 end
local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], 'done', '1', 'stage', 'COMPLETED', 'updatedAt', ARGV[5], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if f[2] and f[2] ~= '' then
  local mk = ARGV[4] .. f[2]
  if redis.call('GET', mk) == ARGV[2] then redis.call('DEL', mk) end
end
redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[2], ver = v, stage = 'COMPLETED', worker = f[3] or '', updatedAt = tonumber(ARGV[5]), done = true}))
return 1
