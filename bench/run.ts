// Runs the benchmarks: `npm run bench` runs all of them, `npm run bench -- storage` one.
// Flags after the names go to each benchmark (e.g. --quick, --keep,
// --server-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof").
export {};

const BENCHMARKS: Record<string, { describe: string; load: () => Promise<{ main(args: string[]): Promise<void> }> }> = {
  storage: {
    describe: 'ByteStream, batch calls and FindMissingBlobs against a reapi serve child process',
    load: () => import('./storage.ts'),
  },
  execution: {
    describe: 'no-op action latency vs raw bwrap, throughput of serve and a redis fleet, Bazel cold/warm remote vs local',
    load: () => import('./execution.ts'),
  },
  docker: {
    describe: 'DockerRunner no-op overhead (warm container, own container, docker CLI) next to bwrap, runner level and through Execute',
    load: () => import('./docker.ts'),
  },
  locality: {
    describe: 'bytes fetched from the CAS per action and wall time with routing by locality on vs off (a redis fleet, 2 workers)',
    load: () => import('./locality.ts'),
  },
  wasm: {
    describe: 'wasm proc-macro expansion vs the same macro native (same input, same run), and the round trip of an expansion served from the cache',
    load: () => import('./wasm.ts'),
  },
  cargo: {
    describe: 'a Cargo crate graph (9 build scripts) built locally vs with build scripts on the fleet (reapi cargo), cold and warm',
    load: () => import('./cargo.ts'),
  },
  'rust-macros': {
    describe: "a crate of N structs deriving serde's Serialize/Deserialize: native serde_derive vs serde_derive in wasm through reapi cargo's expander, cold and warm",
    load: () => import('./rust-macros.ts'),
  },
  load: {
    describe: 'N concurrent clients executing M actions through a local fleet (3 storage nodes with replicas, 2 schedulers, 2 workers): actions/s, p50/p99 per stage, nothing lost',
    load: () => import('./load.ts'),
  },
  digest: {
    describe: 'BLAKE3 vs SHA-256 on the ByteStream write path, each next to its raw hash speed, in one run',
    load: () => import('./digest.ts'),
  },
  start: {
    describe: 'how long `reapi --help`, `reapi expand`, `reapi cargo` take to start, compiled vs from the TypeScript sources',
    load: () => import('./start.ts'),
  },
  tls: {
    describe: 'what TLS costs: no-op action latency and ByteStream throughput, TLS vs plaintext, in one run',
    load: () => import('./tls.ts'),
  },
  verification: {
    describe: 'cost of --verify-rate 0 / 0.1 / 1: synthetic Execute workload and a cold Bazel remote build',
    load: () => import('./verification.ts'),
  },
};

const argv = process.argv.slice(2);
const names = argv.filter((a) => !a.startsWith('-'));
const flags = argv.filter((a) => a.startsWith('-'));

if (flags.includes('--help') || flags.includes('-h')) {
  process.stdout.write('usage: npm run bench -- [name...] [--quick] [--keep] [--server-node-args="..."]\n\nbenchmarks:\n');
  for (const [name, b] of Object.entries(BENCHMARKS)) process.stdout.write(`  ${name.padEnd(12)} ${b.describe}\n`);
  process.exit(0);
}

const unknown = names.filter((n) => !(n in BENCHMARKS));
if (unknown.length) {
  process.stderr.write(`unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(BENCHMARKS).join(', ')}\n`);
  process.exit(2);
}

let failed = false;
for (const name of names.length ? names : Object.keys(BENCHMARKS)) {
  try {
    await (await BENCHMARKS[name]!.load()).main(flags);
  } catch (err) {
    failed = true;
    process.stderr.write(`benchmark ${name} failed: ${(err as Error).stack ?? String(err)}\n`);
  }
}
process.exit(failed ? 1 : 0);
