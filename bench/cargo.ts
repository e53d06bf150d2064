// Cargo build scripts on the fleet: the crate graph of test/e2e/cargo-workspace (Debian's crate
// sources; 9 build scripts: rustc probes, autocfg, code generation, pkg-config + zlib, the
// package's own) built with Debian's cargo and rustc
//   - locally: `cargo build` in a fresh copy (cold), then `cargo clean` + `cargo build` (warm:
//     the same work, warm page cache),
//   - through the fleet: `reapi cargo -- build` against a fresh `reapi serve --verify-rate 0` in a
//     fresh copy (cold: every build script executes remotely), then `cargo clean` + the same
//     (warm: every build script is an ActionCache hit),
// and prints each as a ratio to the local build of the same kind, median of the reps, with the CPU
// each used (client processes; for the fleet also the server and its sandboxes: CPU is steadier
// than wall time on a shared machine). The server runs on the same machine, so a cold fleet build
// also pays for the sandboxed executions.
//   npm run bench -- cargo [--quick] [--keep] [--reps=N]
import { readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { join } from 'node:path';

import { cargo, cargoSkip, copyWorkspace, GRAPH_BUILD_SCRIPTS, GRAPH_WORKSPACE, reapiCargo, type BuildScriptRecord, type Ran } from '../test/e2e/cargo.ts';
import { atLeast, below, environment, fmtNum, log, MiB, procCpuSecondsWithChildren, removeDir, renderTable, saveResults, scratchDir, startServer, type Row } from './lib.ts';

interface Build {
  kind: 'local-cold' | 'local-warm' | 'fleet-cold' | 'fleet-warm';
  rep: number;
  seconds: number;
  /** CPU of cargo, rustc, build scripts run locally and (fleet) reapi cargo and its trampolines. */
  clientCpuSeconds: number;
  /** CPU of the server and the sandboxes it ran (fleet builds). */
  serverCpuSeconds?: number;
  buildScripts?: { hits: number; executed: number; clientMs: number };
}

function check(r: Ran, what: string): void {
  if (r.code !== 0) throw new Error(`${what} exited with ${r.code}:\n${r.stderr.slice(-4000)}`);
}

function summarize(records: BuildScriptRecord[]): Build['buildScripts'] {
  return {
    hits: records.filter((r) => r.source === 'hit').length,
    executed: records.filter((r) => r.source === 'executed').length,
    clientMs: records.reduce((a, r) => a + r.ms, 0),
  };
}

/** CPU seconds of this process's waited-for children (cutime + cstime): every process of a build. */
function childrenCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / 100;
}

async function timed<T extends Ran>(fn: () => Promise<T>, serverPid?: number): Promise<{ r: T; clientCpuSeconds: number; serverCpuSeconds?: number }> {
  const c0 = childrenCpuSeconds();
  const s0 = serverPid ? procCpuSecondsWithChildren(serverPid) : 0;
  const r = await fn();
  const out: { r: T; clientCpuSeconds: number; serverCpuSeconds?: number } = { r, clientCpuSeconds: childrenCpuSeconds() - c0 };
  if (serverPid) out.serverCpuSeconds = procCpuSecondsWithChildren(serverPid) - s0;
  return out;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function rep(tmp: string, i: number): Promise<Build[]> {
  const out: Build[] = [];
  const local = await copyWorkspace(GRAPH_WORKSPACE, join(tmp, `local-${i}-`));
  try {
    log(`rep ${i + 1}: local cold build`);
    let t = await timed(() => cargo(local.dir, ['build']));
    check(t.r, 'local cargo build');
    out.push({ kind: 'local-cold', rep: i, seconds: t.r.ms / 1000, clientCpuSeconds: t.clientCpuSeconds });
    check(await cargo(local.dir, ['clean']), 'cargo clean');
    log(`rep ${i + 1}: local warm build (after cargo clean)`);
    t = await timed(() => cargo(local.dir, ['build']));
    check(t.r, 'local cargo build');
    out.push({ kind: 'local-warm', rep: i, seconds: t.r.ms / 1000, clientCpuSeconds: t.clientCpuSeconds });
  } finally {
    await local.dispose();
  }

  const server = await startServer({ dataDir: join(tmp, `serve-${i}`), args: ['--verify-rate', '0', '--audit-rate', '0'] });
  const fleet = await copyWorkspace(GRAPH_WORKSPACE, join(tmp, `fleet-${i}-`));
  try {
    const endpoint = `grpc://${server.address}`;
    log(`rep ${i + 1}: fleet cold build (fresh server)`);
    let t = await timed(() => reapiCargo(fleet.dir, endpoint, ['build']), server.pid);
    check(t.r, 'reapi cargo build');
    out.push({ kind: 'fleet-cold', rep: i, seconds: t.r.ms / 1000, clientCpuSeconds: t.clientCpuSeconds, serverCpuSeconds: t.serverCpuSeconds, buildScripts: summarize(t.r.buildScripts) });
    check(await cargo(fleet.dir, ['clean']), 'cargo clean');
    log(`rep ${i + 1}: fleet warm build (after cargo clean)`);
    t = await timed(() => reapiCargo(fleet.dir, endpoint, ['build']), server.pid);
    check(t.r, 'reapi cargo build');
    out.push({ kind: 'fleet-warm', rep: i, seconds: t.r.ms / 1000, clientCpuSeconds: t.clientCpuSeconds, serverCpuSeconds: t.serverCpuSeconds, buildScripts: summarize(t.r.buildScripts) });
  } finally {
    await fleet.dispose();
    await server.stop();
  }
  for (const b of out) log(`  ${b.kind}: ${fmtNum(b.seconds, 2)} s, cpu ${fmtNum(b.clientCpuSeconds, 1)} s${b.serverCpuSeconds !== undefined ? ` + server ${fmtNum(b.serverCpuSeconds, 1)} s` : ''}${b.buildScripts ? ` (build scripts: ${b.buildScripts.hits} hits, ${b.buildScripts.executed} executed, ${fmtNum(b.buildScripts.clientMs / 1000, 2)} s in the client)` : ''}`);
  return out;
}

export async function main(args: string[] = []): Promise<void> {
  const skip = cargoSkip();
  if (skip) {
    log(`cargo benchmark skipped: ${skip}`);
    return;
  }
  const quick = args.includes('--quick');
  const reps = Number(args.find((a) => a.startsWith('--reps='))?.slice(7) ?? (quick ? 1 : 3));
  const env = environment();
  if (Number(env.loadavg1) > 0.5) log(`note: load average ${Number(env.loadavg1).toFixed(2)} at start; other work on this machine skews the numbers`);
  const started = performance.now();
  const tmp = await scratchDir('reapi-bench-cargo-', 2048 * MiB);
  // The sandbox user must traverse it to reach the exec roots of the server's worker.
  await chmod(tmp, 0o711);
  try {
    const builds: Build[] = [];
    for (let i = 0; i < reps; i++) builds.push(...(await rep(tmp, i)));
    const med = (kind: Build['kind']) => median(builds.filter((b) => b.kind === kind).map((b) => b.seconds));
    const per = (kind: Build['kind']) => builds.filter((b) => b.kind === kind).map((b) => fmtNum(b.seconds, 2)).join(' / ');
    const scripts = (kind: Build['kind']) => {
      const b = builds.filter((x) => x.kind === kind).map((x) => x.buildScripts!);
      return `${b.map((x) => `${x.hits} hits + ${x.executed} executed`).join(', ')}; build scripts ${fmtNum(median(b.map((x) => x.clientMs)) / 1000, 2)} s summed in the client`;
    };
    const coldRatio = med('fleet-cold') / med('local-cold');
    const warmRatio = med('fleet-warm') / med('local-warm');
    const cpu = (kind: Build['kind']) => median(builds.filter((b) => b.kind === kind).map((b) => b.clientCpuSeconds + (b.serverCpuSeconds ?? 0)));
    const cpuNote = (kind: Build['kind']) => {
      const b = builds.filter((x) => x.kind === kind);
      const server = b.some((x) => x.serverCpuSeconds !== undefined) ? ` (client ${fmtNum(median(b.map((x) => x.clientCpuSeconds)), 1)} + server ${fmtNum(median(b.map((x) => x.serverCpuSeconds ?? 0)), 1)})` : '';
      return `cpu ${fmtNum(cpu(kind), 1)} s${server}`;
    };
    const rows: Row[] = [
      { name: `cargo build of test/e2e/cargo-workspace (${GRAPH_BUILD_SCRIPTS.length} build scripts), wall time, median of ${reps}`, value: '' },
      { name: '  local, cold (fresh copy)', value: `${fmtNum(med('local-cold'), 2)} s`, ratio: '1.00x', note: `per rep ${per('local-cold')} s; ${cpuNote('local-cold')}` },
      { name: '  local, warm (cargo clean + build)', value: `${fmtNum(med('local-warm'), 2)} s`, ratio: '1.00x', note: `per rep ${per('local-warm')} s; ${cpuNote('local-warm')}` },
      {
        name: '  fleet, cold (fresh server, every build script executed)',
        value: `${fmtNum(med('fleet-cold'), 2)} s`,
        ratio: `${fmtNum(coldRatio, 2)}x`,
        note: `vs local cold; per rep ${per('fleet-cold')} s; ${cpuNote('fleet-cold')} (${fmtNum(cpu('fleet-cold') / cpu('local-cold'), 2)}x); ${scripts('fleet-cold')}; the server shares this machine's cores`,
      },
      {
        name: '  fleet, warm (cargo clean + build, every build script a cache hit)',
        value: `${fmtNum(med('fleet-warm'), 2)} s`,
        ratio: `${fmtNum(warmRatio, 2)}x`,
        note: `vs local warm; per rep ${per('fleet-warm')} s; ${cpuNote('fleet-warm')} (${fmtNum(cpu('fleet-warm') / cpu('local-warm'), 2)}x); ${scripts('fleet-warm')}`,
        target: below(warmRatio, 1.005, '<= 1.0x local (no slower)'),
      },
    ];
    const hitsOk = builds.filter((b) => b.kind === 'fleet-warm').every((b) => b.buildScripts!.hits === GRAPH_BUILD_SCRIPTS.length);
    rows.push({ name: '  warm fleet builds with every build script a cache hit', value: hitsOk ? 'all' : 'NOT all', target: atLeast(hitsOk ? 1 : 0, 1, 'all') });
    const totalSeconds = (performance.now() - started) / 1000;
    const file = await saveResults('cargo', {
      benchmark: 'cargo',
      date: new Date().toISOString(),
      quick,
      environment: env,
      totalSeconds,
      config: { reps, buildScripts: GRAPH_BUILD_SCRIPTS },
      summary: {
        localCold: med('local-cold'),
        localWarm: med('local-warm'),
        fleetCold: med('fleet-cold'),
        fleetWarm: med('fleet-warm'),
        coldRatio,
        warmRatio,
        cpuSeconds: { localCold: cpu('local-cold'), localWarm: cpu('local-warm'), fleetCold: cpu('fleet-cold'), fleetWarm: cpu('fleet-warm') },
      },
      builds,
    });
    rows.push({ name: `total benchmark time ${fmtNum(totalSeconds, 0)} s`, value: '' });
    process.stdout.write(`\n${renderTable('reapi cargo benchmark: build scripts on the fleet vs local', rows)}\nresults: ${file}\n`);
  } finally {
    if (args.includes('--keep')) log(`kept ${tmp}`);
    else await removeDir(tmp);
  }
}
