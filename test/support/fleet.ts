// A fleet of real `reapi` processes for integration tests: redis-server, one `reapi cas`, one
// `reapi scheduler` and N `reapi worker`s (each with its own data and work dir), plus a client
// of the scheduler. Everything is stopped and removed by `stop()`.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectExec, type ExecClients } from './execution.ts';
import { startReapi, type ReapiProcess } from './reapi-process.ts';
import { startRedis, type TestRedis } from './redis.ts';

export interface Fleet {
  redis: TestRedis;
  cas: ReapiProcess;
  scheduler: ReapiProcess;
  workers: ReapiProcess[];
  /** A client of the scheduler (instance ''). */
  c: ExecClients;
  stop(): Promise<void>;
}

export interface FleetOptions {
  /** Prefix of the temp dirs, e.g. 'reapi-loc'. */
  name: string;
  workers?: number;
  /** Extra flags of the scheduler (e.g. --verify-rate 1). */
  schedulerArgs?: string[];
  /** Extra flags of each worker (default: --concurrency 1). */
  workerArgs?: string[];
}

export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const dirs: string[] = [];
  const procs: ReapiProcess[] = [];
  const tmp = async (suffix: string) => {
    const d = await mkdtemp(join(tmpdir(), `${opts.name}-${suffix}-`));
    dirs.push(d);
    return d;
  };
  const redis = await startRedis();
  const stop = async () => {
    for (const p of procs.reverse()) await p.stop().catch(() => p.kill());
    await redis.stop();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  };
  try {
    const log = ['--log-level', 'warn'];
    const cas = await startReapi(['cas', '--data-dir', await tmp('cas'), ...log]);
    procs.push(cas);
    const casAddr = `127.0.0.1:${cas.grpcPort}`;
    const scheduler = await startReapi(['scheduler', '--redis', redis.url, '--cas', casAddr, '--data-dir', await tmp('sched'), ...log, ...(opts.schedulerArgs ?? [])]);
    procs.push(scheduler);
    const workers: ReapiProcess[] = [];
    for (let i = 0; i < (opts.workers ?? 2); i++) {
      const workDir = await tmp(`w${i}`);
      await chmod(workDir, 0o755); // the sandbox user must traverse it
      const args = ['worker', '--redis', redis.url, '--cas', casAddr, '--data-dir', await tmp(`w${i}-data`), '--work-dir', workDir, ...log];
      const w = await startReapi([...args, ...(opts.workerArgs ?? ['--concurrency', '1'])]);
      procs.push(w);
      workers.push(w);
    }
    const c = connectExec(`127.0.0.1:${scheduler.grpcPort}`, '');
    return {
      redis,
      cas,
      scheduler,
      workers,
      c,
      stop: async () => {
        c.close();
        await stop();
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Poll `fn` every 100 ms until it returns something other than undefined or false. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
