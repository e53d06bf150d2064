-- Counts a delivery; a job delivered again (its worker died) goes back to QUEUED.
-- KEYS: op key. ARGV: worker, now, events channel, op name.
-- Returns {'gone'}, {'done'} or {'ok', deliveries, job JSON, last worker, queuedAt}.
local f = redis.call('HMGET', KEYS[1], 'done', 'job', 'lastWorker', 'stage', 'queuedAt')
if not f[1] then return {'gone'} end
if f[1] == '1' then return {'done'} end
local n = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('HSET', KEYS[1], 'lastWorker', ARGV[1])
if f[4] ~= 'QUEUED' then
  local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
  redis.call('HSET', KEYS[1], 'stage', 'QUEUED', 'worker', '', 'updatedAt', ARGV[2])
  redis.call('PUBLISH', ARGV[3], cjson.encode({name = ARGV[4], ver = v, stage = 'QUEUED', worker = '', updatedAt = tonumber(ARGV[2]), done = false}))
end
return {'ok', n, f[2], f[3] or '', f[5] or '0'}
