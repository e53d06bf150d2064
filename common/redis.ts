// Redis connections as every role opens them: `redis://[[user]:password@]host:port[/db]`, or
// `rediss://...` for TLS, verified against `ca` (a PEM file) when the server's certificate is not
// signed by a system root.
import { readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import { wrap } from './errors.ts';

export interface RedisTarget {
  url: string;
  /** PEM CA bundle for `rediss://` (config `redisCa`, flag --redis-ca). */
  ca?: string;
}

/** A target from a URL string or a target object. */
export function redisTarget(target: string | RedisTarget): RedisTarget {
  return typeof target === 'string' ? { url: target } : target;
}

export function connectRedis(target: string | RedisTarget, options: RedisOptions = {}): Redis {
  const { url, ca } = redisTarget(target);
  let tls: RedisOptions['tls'];
  if (url.startsWith('rediss:') && ca !== undefined) {
    try {
      tls = { ca: readFileSync(ca) };
    } catch (err) {
      throw wrap(err, `--redis-ca: cannot read ${ca}`);
    }
  }
  return new Redis(url, { ...options, ...(tls ? { tls } : {}) });
}
