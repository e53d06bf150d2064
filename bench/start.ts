// How long the `reapi` command takes to start, compiled (dist/, what users run) against the same
// command from the TypeScript sources through tsx (REAPI_FROM_SOURCES=1), and against a bare
// `node -e 0` (the floor). Runs alternate; medians of N runs each.
//
//   npm run bench -- start [--quick]
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { below, fmtNum, log, percentile, REPO_ROOT, renderTable, saveResults, type Row } from './lib.ts';

const BIN = join(REPO_ROOT, 'bin', 'reapi.mjs');

const COMMANDS: Record<string, string[]> = {
  'reapi --help': ['--help'],
  'reapi expand --help': ['expand', '--help'],
  'reapi cargo --help': ['cargo', '--help'],
  'reapi expander --help': ['expander', '--help'],
};

function timeMs(args: string[], env: NodeJS.ProcessEnv = {}): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { env: { ...process.env, ...env }, stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}`);
  return performance.now() - t0;
}

export async function main(args: string[]): Promise<void> {
  const runs = args.includes('--quick') ? 5 : 15;
  // The compiled build must be current, or bin/ would run the sources.
  spawnSync('bash', [join(REPO_ROOT, 'scripts', 'build.sh')], { stdio: 'ignore' });
  log(`${runs} runs of each command, compiled and from sources, alternating`);
  const floor: number[] = [];
  for (let i = 0; i < runs; i++) floor.push(timeMs(['-e', '0']));
  const rows: Row[] = [{ name: '`node -e 0` (the floor)', value: `${fmtNum(percentile(floor, 50), 0)} ms` }];
  const results: Record<string, unknown> = { nodeMs: percentile(floor, 50) };
  for (const [name, argv] of Object.entries(COMMANDS)) {
    const compiled: number[] = [];
    const sources: number[] = [];
    for (let i = 0; i < runs; i++) {
      compiled.push(timeMs([BIN, ...argv]));
      sources.push(timeMs([BIN, ...argv], { REAPI_FROM_SOURCES: '1' }));
    }
    const c = percentile(compiled, 50);
    const s = percentile(sources, 50);
    rows.push({ name, value: '' });
    rows.push({ name: '  compiled (dist/)', value: `${fmtNum(c, 0)} ms`, ratio: `${fmtNum(c / s, 2)}x sources`, target: below(c, 200, '< 200 ms') });
    rows.push({ name: '  from sources (tsx)', value: `${fmtNum(s, 0)} ms` });
    results[name] = { compiledMs: c, sourcesMs: s };
  }
  process.stdout.write(`\n${renderTable('reapi command start (median)', rows)}\n`);
  process.stdout.write(`results: ${await saveResults('start', results)}\n`);
}
