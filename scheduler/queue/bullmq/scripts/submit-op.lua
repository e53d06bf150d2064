-- Creates an operation, or answers the in-flight one it merges with.
-- KEYS: op key, merge key (op key again when not mergeable), platforms hash, personal queues hash.
-- ARGV: op name, '1' when mergeable, op key prefix, ttl ms, shared queue name, platform JSON,
--       personal queue the job goes to ('' when the shared one), its worker, fields...
-- Returns {merged operation name or '', 1 when the platform queue is new}.
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing and redis.call('HGET', ARGV[3] .. existing, 'done') == '0' then
    return {existing, 0}
  end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local added = redis.call('HSETNX', KEYS[3], ARGV[5], ARGV[6])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[4], ARGV[7], ARGV[8]) end
return {'', added}
