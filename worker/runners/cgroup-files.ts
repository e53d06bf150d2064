// Reading a cgroup's accounting files, for the runs this worker creates (cgroup.ts) and for the
// containers the Docker engine creates (docker-support.ts) alike: what limits were hit, how much
// CPU and memory were used. Cgroup v2 keeps it all in one directory; v1 spreads it over the
// memory, pids and cpuacct hierarchies (plus, on hybrid hosts, a controller-less v2 directory
// with cpu.stat).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface LimitEvents {
  /** Processes the OOM killer killed inside the cgroup. */
  oomKills: number;
  /** Forks refused because pids.max was reached. */
  pidsLimitHits: number;
}

export interface CgroupUsage {
  userCpuMs: number;
  systemCpuMs: number;
  /** Peak memory charged to the cgroup, when the kernel reports it. */
  memoryPeakBytes: number | undefined;
}

/** The directories of one cgroup: `v2` alone, or the v1 controllers (and a hybrid `unified`). */
export interface CgroupDirs {
  v2?: string;
  memory?: string;
  pids?: string;
  cpuacct?: string;
  unified?: string;
}

export async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Parses "key value" lines (memory.events, pids.events, cpu.stat, memory.oom_control, cpuacct.stat). */
export function parseKeyed(text: string | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of (text ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out.set(k, Number(v));
  }
  return out;
}

export async function readNumber(path: string): Promise<number | undefined> {
  const t = await readText(path);
  if (t === undefined) return undefined;
  const n = Number(t.trim());
  return Number.isFinite(n) ? n : undefined;
}

export async function readLimitEvents(d: CgroupDirs): Promise<LimitEvents> {
  const [mem, pids] = await Promise.all(
    d.v2
      ? [readText(join(d.v2, 'memory.events')), readText(join(d.v2, 'pids.events'))]
      : // memory.oom_control has an oom_kill counter since Linux 4.13.
        [d.memory ? readText(join(d.memory, 'memory.oom_control')) : undefined, d.pids ? readText(join(d.pids, 'pids.events')) : undefined],
  );
  return { oomKills: parseKeyed(mem).get('oom_kill') ?? 0, pidsLimitHits: parseKeyed(pids).get('max') ?? 0 };
}

function cpuStat(text: string | undefined): { userCpuMs: number; systemCpuMs: number } {
  const stat = parseKeyed(text);
  return { userCpuMs: Math.round((stat.get('user_usec') ?? 0) / 1000), systemCpuMs: Math.round((stat.get('system_usec') ?? 0) / 1000) };
}

export async function readUsage(d: CgroupDirs): Promise<CgroupUsage> {
  if (d.v2) {
    const [cpu, peak] = await Promise.all([readText(join(d.v2, 'cpu.stat')), readNumber(join(d.v2, 'memory.peak'))]);
    return { ...cpuStat(cpu), memoryPeakBytes: peak };
  }
  const peak = d.memory ? await readNumber(join(d.memory, 'memory.max_usage_in_bytes')) : undefined;
  if (d.unified) return { ...cpuStat(await readText(join(d.unified, 'cpu.stat'))), memoryPeakBytes: peak };
  if (!d.cpuacct) return { userCpuMs: 0, systemCpuMs: 0, memoryPeakBytes: peak };
  const [u, s] = await Promise.all([readNumber(join(d.cpuacct, 'cpuacct.usage_user')), readNumber(join(d.cpuacct, 'cpuacct.usage_sys'))]);
  if (u !== undefined && s !== undefined) return { userCpuMs: Math.round(u / 1e6), systemCpuMs: Math.round(s / 1e6), memoryPeakBytes: peak };
  // USER_HZ ticks (100 on every mainstream architecture).
  const stat = parseKeyed(await readText(join(d.cpuacct, 'cpuacct.stat')));
  return { userCpuMs: (stat.get('user') ?? 0) * 10, systemCpuMs: (stat.get('system') ?? 0) * 10, memoryPeakBytes: peak };
}
