// Which workers are live: each holds a registration key (`<p>:worker:<name>`) that expires
// `workerTtlMs` after its last heartbeat, so liveness is decided by Redis' clock alone; the
// `<p>:workers` zset only lists names and is pruned lazily.
import type { PlatformProperties, QueueStats } from '../../../execution/job-queue.ts';
import type { BullmqContext } from './context.ts';

export interface Registration {
  platform: PlatformProperties;
  concurrency: number;
  /** Jobs it runs, as last published. */
  active: number;
  /** Stopping: never routed to. */
  draining: boolean;
}

export function encodeRegistration(r: Registration): string {
  return JSON.stringify(r.draining ? { platform: r.platform, concurrency: r.concurrency, draining: true } : { platform: r.platform, concurrency: r.concurrency, active: r.active });
}

export function parseRegistration(r: string | null | undefined): Registration | undefined {
  if (!r) return undefined;
  try {
    const reg = JSON.parse(r) as { platform: PlatformProperties; concurrency?: number; active?: number; draining?: boolean };
    return { platform: reg.platform, concurrency: reg.concurrency ?? 1, active: reg.active ?? 0, draining: reg.draining === true };
  } catch {
    return undefined;
  }
}

/** Registered workers (names and registrations, expired ones left out and pruned). */
export async function registeredWorkers(ctx: BullmqContext): Promise<Array<{ name: string; reg: Registration }>> {
  const names = await ctx.cmd.zrange(ctx.keys.workers, 0, -1);
  const regs = names.length ? await ctx.cmd.mget(names.map((n) => ctx.keys.worker(n))) : [];
  const live: Array<{ name: string; reg: Registration }> = [];
  const dead: string[] = [];
  for (const [i, r] of regs.entries()) {
    const name = names[i] ?? '';
    if (!r) {
      dead.push(name);
      continue;
    }
    const reg = parseRegistration(r);
    if (reg) live.push({ name, reg });
  }
  if (dead.length) await ctx.cmd.zrem(ctx.keys.workers, ...dead);
  return live;
}

/** Live workers as QueueStats lists them. */
export async function liveWorkers(ctx: BullmqContext): Promise<QueueStats['workers']> {
  return (await registeredWorkers(ctx)).map(({ name, reg }) => ({ name, platform: reg.platform, concurrency: reg.concurrency }));
}

export async function isLive(ctx: BullmqContext, worker: string): Promise<boolean> {
  return (await ctx.cmd.exists(ctx.keys.worker(worker))) === 1;
}
