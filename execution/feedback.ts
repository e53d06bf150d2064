// What the scheduler learns from the cache: how often each entry is served, and per mnemonic how
// often actions ran and how often they turned out nondeterministic. Verification and audits use
// it to look first where a bad entry would do the most harm.
//
// In memory for `reapi serve`; in Redis for a fleet, so every scheduler and worker shares it.
import type { Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../common/redis.ts';
import { LRUCache } from 'lru-cache';
import { digestKey, type Digest } from '../common/digest.ts';

export interface MnemonicStats {
  executions: number;
  nondeterministic: number;
  /** Cache hits served for actions of this mnemonic. */
  served: number;
}

export interface FeedbackStore {
  recordServed(instanceName: string, action: Digest, mnemonic: string): Promise<void>;
  recordExecuted(mnemonic: string, nondeterministic: boolean): Promise<void>;
  /** Times this entry was served from the cache. */
  servedCount(instanceName: string, action: Digest): Promise<number>;
  mnemonic(mnemonic: string): Promise<MnemonicStats>;
  close(): Promise<void>;
}

const EMPTY: MnemonicStats = { executions: 0, nondeterministic: 0, served: 0 };

/** Entries whose served counts are kept in memory; the least recently served are forgotten first. */
const MAX_ENTRIES = 100_000;

/**
 * Mnemonics are named by clients: at most this many are kept in memory (the least recently seen
 * forgotten first), and in Redis each one's counts expire a while after it was last seen, so a
 * client inventing names cannot grow either without bound.
 */
export const MAX_MNEMONICS = 10_000;
const MNEMONIC_TTL_MS = 30 * 86_400_000;

export class MemoryFeedbackStore implements FeedbackStore {
  private readonly served = new Map<string, number>();
  private readonly mnemonics = new LRUCache<string, MnemonicStats>({ max: MAX_MNEMONICS });

  async recordServed(instanceName: string, action: Digest, mnemonic: string): Promise<void> {
    const key = `${instanceName}\0${digestKey(action)}`;
    const n = (this.served.get(key) ?? 0) + 1;
    this.served.delete(key);
    this.served.set(key, n);
    if (this.served.size > MAX_ENTRIES) this.served.delete(this.served.keys().next().value!);
    this.update(mnemonic, (s) => s.served++);
  }

  async recordExecuted(mnemonic: string, nondeterministic: boolean): Promise<void> {
    this.update(mnemonic, (s) => {
      s.executions++;
      if (nondeterministic) s.nondeterministic++;
    });
  }

  async servedCount(instanceName: string, action: Digest): Promise<number> {
    return this.served.get(`${instanceName}\0${digestKey(action)}`) ?? 0;
  }

  async mnemonic(mnemonic: string): Promise<MnemonicStats> {
    return { ...(this.mnemonics.get(mnemonic) ?? EMPTY) };
  }

  async close(): Promise<void> {}

  private update(mnemonic: string, fn: (s: MnemonicStats) => void): void {
    const s = this.mnemonics.get(mnemonic) ?? { ...EMPTY };
    fn(s);
    this.mnemonics.set(mnemonic, s);
  }
}

export class RedisFeedbackStore implements FeedbackStore {
  private readonly redis: Redis;

  constructor(redis: string | RedisTarget, private readonly prefix = 'reapi') {
    this.redis = connectRedis(redis, { lazyConnect: true, maxRetriesPerRequest: 3 });
  }

  async recordServed(instanceName: string, action: Digest, mnemonic: string): Promise<void> {
    const key = `${this.prefix}:served:${instanceName}:${digestKey(action)}`;
    // Served counts fade out after 30 days without a hit, mnemonics 30 days after they were last seen.
    const m = this.mnemonicKey(mnemonic);
    await this.redis.multi().incr(key).pexpire(key, 30 * 86_400_000).hincrby(m, 'served', 1).pexpire(m, MNEMONIC_TTL_MS).exec();
  }

  async recordExecuted(mnemonic: string, nondeterministic: boolean): Promise<void> {
    const key = this.mnemonicKey(mnemonic);
    const m = this.redis.multi().hincrby(key, 'executions', 1);
    if (nondeterministic) m.hincrby(key, 'nondeterministic', 1);
    await m.pexpire(key, MNEMONIC_TTL_MS).exec();
  }

  async servedCount(instanceName: string, action: Digest): Promise<number> {
    return Number((await this.redis.get(`${this.prefix}:served:${instanceName}:${digestKey(action)}`)) ?? 0);
  }

  async mnemonic(mnemonic: string): Promise<MnemonicStats> {
    const h = await this.redis.hgetall(this.mnemonicKey(mnemonic));
    return { executions: Number(h.executions ?? 0), nondeterministic: Number(h.nondeterministic ?? 0), served: Number(h.served ?? 0) };
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }

  private mnemonicKey(mnemonic: string): string {
    return `${this.prefix}:mnemonic:${mnemonic || '(none)'}`;
  }
}
