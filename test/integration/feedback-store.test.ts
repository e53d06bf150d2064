// Feedback is keyed by client-chosen mnemonics: neither store may grow without bound.
import { strict as assert } from 'node:assert';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { digestOf } from '../../common/digest.ts';
import { MAX_MNEMONICS, MemoryFeedbackStore, RedisFeedbackStore } from '../../execution/feedback.ts';
import { redisSkip, startRedis, type TestRedis } from '../support/redis.ts';

test('the memory store keeps at most MAX_MNEMONICS mnemonics, forgetting the least recently seen', async () => {
  const f = new MemoryFeedbackStore();
  await f.recordExecuted('kept', true);
  for (let i = 0; i < MAX_MNEMONICS; i++) await f.recordExecuted(`invented-${i}`, false);
  assert.deepEqual(await f.mnemonic('kept'), { executions: 0, nondeterministic: 0, served: 0 }, 'the oldest was forgotten');
  assert.deepEqual(await f.mnemonic(`invented-${MAX_MNEMONICS - 1}`), { executions: 1, nondeterministic: 0, served: 0 });
});

describe('the Redis store', { skip: redisSkip }, () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.stop());

  test('counts per mnemonic, each key expiring a while after it was last written', async () => {
    const f = new RedisFeedbackStore(redis.url, 'fb');
    await f.recordExecuted('CppCompile', true);
    await f.recordExecuted('CppCompile', false);
    await f.recordServed('main', digestOf(Buffer.from('a')), 'CppCompile');
    assert.deepEqual(await f.mnemonic('CppCompile'), { executions: 2, nondeterministic: 1, served: 1 });
    const r = new Redis(redis.url);
    try {
      const ttl = await r.pttl('fb:mnemonic:CppCompile');
      assert.ok(ttl > 29 * 86_400_000 && ttl <= 30 * 86_400_000, `ttl ${ttl}`);
    } finally {
      r.disconnect();
      await f.close();
    }
  });
});
