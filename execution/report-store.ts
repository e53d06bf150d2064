// Reports of nondeterministic actions and of contradicted cache entries: kept newest first,
// listed by `reapi reports` and GET /api/reports. In memory for `reapi serve`, in Redis for a
// fleet (workers write them, the scheduler serves them).
import type { Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../common/redis.ts';
import type { Digest } from '../common/digest.ts';

/** One way two results of an action disagree. */
export interface Difference {
  /** What differs: 'exit code', 'stdout', 'stderr', or an output path (inside a directory: 'dir/file'). */
  what: string;
  /** A short human-readable diff: first differing line for text, first differing offset for binary. */
  detail: string;
}

export interface Report {
  id: string;
  /** 'nondeterministic': two runs disagreed; 'cache-poisoning': an audit contradicted a served entry. */
  kind: 'nondeterministic' | 'cache-poisoning';
  createdAt: string;
  instanceName: string;
  actionDigest: Digest;
  target?: string;
  mnemonic?: string;
  toolInvocationId?: string;
  /** Workers of the first and the second run. */
  workers: string[];
  /** What the second run varied, e.g. "hostname", "umask 077". */
  variation: string[];
  differences: Difference[];
  /** The two ActionResults (first, second), encoded and stored in the CAS. */
  results: Digest[];
}

export interface ReportFilter {
  target?: string;
  mnemonic?: string;
  kind?: Report['kind'];
  limit?: number;
}

export interface ReportStore {
  add(report: Report): Promise<void>;
  /** Newest first. */
  list(filter?: ReportFilter): Promise<Report[]>;
  close(): Promise<void>;
}

/** Reports kept at most; the oldest go first. */
const KEEP = 10_000;

function matches(r: Report, f: ReportFilter): boolean {
  return (!f.target || r.target === f.target) && (!f.mnemonic || r.mnemonic === f.mnemonic) && (!f.kind || r.kind === f.kind);
}

export class MemoryReportStore implements ReportStore {
  private readonly reports: Report[] = [];

  async add(report: Report): Promise<void> {
    this.reports.unshift(report);
    if (this.reports.length > KEEP) this.reports.length = KEEP;
  }

  async list(filter: ReportFilter = {}): Promise<Report[]> {
    return this.reports.filter((r) => matches(r, filter)).slice(0, filter.limit ?? 100);
  }

  async close(): Promise<void> {}
}

export class RedisReportStore implements ReportStore {
  private readonly redis: Redis;
  private readonly key: string;

  constructor(redis: string | RedisTarget, prefix = 'reapi') {
    this.redis = connectRedis(redis, { lazyConnect: true, maxRetriesPerRequest: 3 });
    this.key = `${prefix}:reports`;
  }

  async add(report: Report): Promise<void> {
    await this.redis.multi().lpush(this.key, JSON.stringify(report)).ltrim(this.key, 0, KEEP - 1).exec();
  }

  async list(filter: ReportFilter = {}): Promise<Report[]> {
    const raw = await this.redis.lrange(this.key, 0, KEEP - 1);
    const out: Report[] = [];
    for (const text of raw) {
      const r = JSON.parse(text) as Report;
      if (matches(r, filter)) out.push(r);
      if (out.length >= (filter.limit ?? 100)) break;
    }
    return out;
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
