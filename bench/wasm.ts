// Wasm macro benchmark, same run, same macro (guest/examples/describe: syn + quote), same input:
//   1. expansion time: native (the same Rust functions in a native binary, looped in-process) vs
//      wasm (a fresh instance made while the thread was idle + the expansion, in an expansion thread; and the pool round trip seen
//      from the main thread), for a small struct and a 200-field struct. Target: wasm within 3x.
//   2. through the fleet (`reapi serve` child process, the client library in this process with a
//      warm channel): an executed expansion (skip_cache_lookup) and the round trip of an expansion
//      served from the ActionCache. Target: a cache hit under 5 ms. Also one `reapi expand` CLI
//      call (process start included) for reference.
//   3. through the persistent expander (a Unix socket, as the cargo shim asks it): a miss expanded
//      in the in-process pool (against native), a repeat served from memory, and a hit from the
//      ActionCache (a fresh expander, as in a new build). Target: a hit well under 5 ms.
// Prints a table and saves JSON under bench/results/.
//
//   npm run bench -- wasm [--quick]
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expand, prepareExpansion } from '../clients/expand-client.ts';
import { connectExec, execute, uploadMissing } from '../clients/remote-execution.ts';
import { guestArtifacts, expandNatively } from '../test/support/guest-build.ts';
import { checkModule } from '../execution/wasm/module-check.ts';
import { WasmPool } from '../execution/wasm/pool.ts';
import { ExpanderClient } from '../clients/expander/expander-client.ts';
import { startExpander } from '../clients/expander/expander-server.ts';
import { InProcessExpander } from '../execution/wasm/in-process-expander.ts';
import { REPO_ROOT, below, environment, fmtNum, log, percentile, renderTable, saveResults, startServer, type Row } from './lib.ts';

const TARGET_RATIO = 3;
const TARGET_HIT_MS = 5;

function bigStruct(fields: number): string {
  const body = Array.from({ length: fields }, (_, i) => `    pub field_${i}: Option<Vec<(u32, String)>>,`).join('\n');
  return `#[derive(Describe)]\npub struct Big<'a, T: Clone> where T: Default {\n${body}\n    pub tail: &'a T,\n}\n`;
}

const INPUTS: Record<string, string> = {
  'small struct (3 fields)': '#[derive(Describe)] pub struct Point { pub x: i32, pub y: i32, label: String }',
  '200-field struct': bigStruct(200),
};

/** ms per expansion of the native binary, looping in-process (process start excluded). */
function nativeMs(bin: string, input: string, repeat: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['derive_describe', '--repeat', String(repeat)], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(Number(err.trim()) / 1e6) : reject(new Error(`native-expand: ${err}`))));
    child.stdin.end(input);
  });
}

const median = (v: number[]) => percentile(v, 50);

export async function main(args: string[] = []): Promise<void> {
  const quick = args.includes('--quick');
  const reps = quick ? 30 : 200;
  log('building the example macros (cached after the first time)...');
  const g = await guestArtifacts();
  const moduleBytes = await readFile(g.describe.wasmPath);
  const checked = checkModule(moduleBytes, { maxMemoryBytes: 256 << 20 });
  const rows: Row[] = [];
  const results: Record<string, unknown> = { environment: environment(), module: { sha256: g.describe.sha256, bytes: moduleBytes.length } };

  // 1. Expansion time, native vs wasm.
  rows.push({ name: 'Expansion time, same macro and input (derive Describe: syn + quote)', value: '' });
  const pool = new WasmPool({ size: 1 });
  await pool.warm();
  const expansion: Record<string, unknown> = {};
  const nativeByInput = new Map<string, number>();
  try {
    for (const [name, input] of Object.entries(INPUTS)) {
      const job = { moduleKey: checked.sha256, module: checked.bytes, abi: checked.abi, entry: 'derive_describe', inputs: [input], memoryCapBytes: 256 << 20 };
      const native = await expandNatively(g, 'derive_describe', input);
      const thread: number[] = [];
      const roundTrip: number[] = [];
      for (let i = 0; i < reps + 5; i++) {
        const t0 = performance.now();
        const r = await pool.expand(job, 30_000);
        const t1 = performance.now();
        if (!r.ok) throw new Error(`wasm expansion failed: ${r.message}`);
        if (r.output !== native.toString()) throw new Error('wasm and native expansions differ');
        if (i >= 5) {
          thread.push(r.elapsedMs);
          roundTrip.push(t1 - t0);
        }
      }
      // Native measured right after, in the same run.
      const nat = median(await Promise.all([0, 1, 2].map(() => nativeMs(g.nativeExpand, input, reps))));
      nativeByInput.set(name, nat);
      const wasm = median(thread);
      const ratio = wasm / nat;
      rows.push({ name: `  ${name}: native`, value: `${fmtNum(nat, 3)} ms`, note: `${reps} expansions looped in one process` });
      rows.push({
        name: `  ${name}: wasm (a fresh instance, made while idle, + expansion)`,
        value: `${fmtNum(wasm, 3)} ms`,
        ratio: `${fmtNum(ratio, 2)}x native`,
        target: below(ratio, TARGET_RATIO, `< ${TARGET_RATIO}x`),
        note: `p90 ${fmtNum(percentile(thread, 90), 3)} ms; output byte-identical to native`,
      });
      rows.push({ name: `  ${name}: wasm via the pool (main thread round trip)`, value: `${fmtNum(median(roundTrip), 3)} ms`, ratio: `${fmtNum(median(roundTrip) / nat, 2)}x native` });
      expansion[name] = { nativeMs: nat, wasmMs: wasm, wasmP90Ms: percentile(thread, 90), poolRoundTripMs: median(roundTrip), ratio };
    }
  } finally {
    await pool.close();
  }
  results.expansion = expansion;

  // 2. Through the fleet.
  const dataDir = await mkdtemp(join(tmpdir(), 'reapi-bench-wasm-'));
  const server = await startServer({ dataDir });
  const c = connectExec(server.address, 'bench');
  try {
    rows.push({ name: 'Through reapi serve (client library, warm channel)', value: '' });
    const input = Buffer.from(INPUTS['small struct (3 fields)']!);
    const req = { module: moduleBytes, entry: 'derive_describe', input, platform: { ISA: 'x86-64' } };
    const first = await expand(c, req);
    if (first.cached) throw new Error('the first expansion was already cached (stale data dir?)');
    const prepared = prepareExpansion(req);
    await uploadMissing(c, prepared.blobs);
    const executed: number[] = [];
    for (let i = 0; i < (quick ? 10 : 40); i++) {
      const t0 = performance.now();
      const o = await execute(c, prepared.actionDigest, { skipCacheLookup: true });
      executed.push(performance.now() - t0);
      if (o.response.result?.exit_code !== 0) throw new Error('execution failed');
    }
    const hits: number[] = [];
    for (let i = 0; i < reps + 5; i++) {
      const t0 = performance.now();
      const r = await expand(c, req);
      const dt = performance.now() - t0;
      if (!r.cached) throw new Error('expected a cache hit');
      if (i >= 5) hits.push(dt);
    }
    const hit = median(hits);
    rows.push({ name: '  executed expansion (Execute, skip_cache_lookup)', value: `${fmtNum(median(executed), 2)} ms`, note: `p90 ${fmtNum(percentile(executed, 90), 2)} ms` });
    rows.push({
      name: '  cache hit round trip (GetActionResult, expansion inlined)',
      value: `${fmtNum(hit, 2)} ms`,
      target: below(hit, TARGET_HIT_MS, `< ${TARGET_HIT_MS} ms`),
      note: `p90 ${fmtNum(percentile(hits, 90), 2)} ms, ${hits.length} hits`,
    });
    // One CLI call for reference: a node process start, tsx, a fresh channel.
    const cliStart = performance.now();
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, [join(REPO_ROOT, 'bin/reapi.mjs'), 'expand', '--endpoint', `grpc://${server.address}`, '--instance', 'bench', '--module', g.describe.wasmPath, '--entry', 'derive_describe'], {
        stdio: ['pipe', 'ignore', 'inherit'],
      });
      child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`reapi expand exited ${code}`))));
      child.stdin.end(input);
    });
    const cli = performance.now() - cliStart;
    rows.push({ name: '  `reapi expand` CLI, cache hit (process start included)', value: `${fmtNum(cli, 0)} ms` });
    results.fleet = { executedMs: median(executed), executedP90Ms: percentile(executed, 90), cacheHitMs: hit, cacheHitP90Ms: percentile(hits, 90), cliCacheHitMs: cli };

    // 3. Through the persistent expander.
    rows.push({ name: 'Through the persistent expander (Unix socket, as the cargo shim)', value: '' });
    const wasm = new InProcessExpander({ threads: 1 });
    const ask = async (client: ExpanderClient, text: string) => {
      const t0 = performance.now();
      const a = await client.expand(g.describe.wasmPath, 'derive_describe', text);
      if (!a.ok) throw new Error(`expander: ${a.message}`);
      return performance.now() - t0;
    };
    const expanderResults: Record<string, unknown> = {};
    try {
      const first = await startExpander({ socket: join(dataDir, 'expander-1.sock'), expander: wasm, clients: c, platform: { ISA: 'x86-64' } });
      const client = await ExpanderClient.connect(first.socket);
      const n = quick ? 20 : 100;
      for (const [name, input] of Object.entries(INPUTS)) {
        // Misses: each input made unique by a comment (the macro ignores it, the key does not).
        await ask(client, `${input} // warm-up`);
        const misses: number[] = [];
        for (let i = 0; i < n; i++) misses.push(await ask(client, `${input} // ${name} miss ${i}`));
        const memory: number[] = [];
        for (let i = 0; i < n; i++) memory.push(await ask(client, `${input} // ${name} miss 0`));
        const nat = nativeByInput.get(name)!;
        rows.push({ name: `  ${name}: miss, expanded in the pool`, value: `${fmtNum(median(misses), 2)} ms`, ratio: `${fmtNum(median(misses) / nat, 2)}x native`, note: `p90 ${fmtNum(percentile(misses, 90), 2)} ms` });
        rows.push({ name: `  ${name}: the same again, from memory`, value: `${fmtNum(median(memory), 3)} ms`, note: `p90 ${fmtNum(percentile(memory, 90), 3)} ms` });
        expanderResults[name] = { missMs: median(misses), missP90Ms: percentile(misses, 90), memoryHitMs: median(memory), nativeMs: nat };
      }
      client.close();
      await first.close(); // waits for the expansions to reach the ActionCache
      const second = await startExpander({ socket: join(dataDir, 'expander-2.sock'), expander: wasm, clients: c, platform: { ISA: 'x86-64' } });
      const fresh = await ExpanderClient.connect(second.socket);
      // A new expander (a new build): memory is empty, the ActionCache has every expansion; the
      // answer is whichever of the cache and a local expansion comes first.
      for (const [name, input] of Object.entries(INPUTS)) {
        const before = { ...second.stats };
        const times: number[] = [];
        for (let i = 0; i < n; i++) times.push(await ask(fresh, `${input} // ${name} miss ${i}`));
        const fromCache = second.stats.cacheHits - before.cacheHits;
        rows.push({
          name: `  ${name}: a new expander, the ActionCache has it`,
          value: `${fmtNum(median(times), 2)} ms`,
          target: below(median(times), TARGET_HIT_MS, `< ${TARGET_HIT_MS} ms`),
          note: `p90 ${fmtNum(percentile(times, 90), 2)} ms; ${fromCache} of ${n} answered by the cache, the rest expanded here first`,
        });
        expanderResults[`${name} newExpander`] = { ms: median(times), p90Ms: percentile(times, 90), fromCache };
      }
      fresh.close();
      await second.close();
    } finally {
      await wasm.close();
    }
    results.expander = expanderResults;
  } finally {
    c.close();
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  const file = await saveResults('wasm', { ...results, rows });
  process.stdout.write(`\n${renderTable('reapi wasm macro benchmark', rows)}\nresults: ${file}\n`);
}
