-- Points an unfinished operation at the queue its job moves to.
-- KEYS: op key. ARGV: from queue, to queue.
-- Returns 1 when this caller moves it (so two movers of one job never both enqueue it), 0 when
-- done, gone or already moved.
local f = redis.call('HMGET', KEYS[1], 'done', 'queue')
if f[1] ~= '0' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'queue', ARGV[2])
return 1
