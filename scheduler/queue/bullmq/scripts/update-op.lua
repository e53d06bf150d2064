-- Moves an unfinished operation to a stage (and names its worker).
-- KEYS: op key. ARGV: events channel, op name, stage, worker, now. Returns 1, or 0 when done.
if redis.call('HGET', KEYS[1], 'done') ~= '0' then return 0 end
local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], 'stage', ARGV[3], 'worker', ARGV[4], 'updatedAt', ARGV[5])
redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[2], ver = v, stage = ARGV[3], worker = ARGV[4], updatedAt = tonumber(ARGV[5]), done = false}))
return 1
