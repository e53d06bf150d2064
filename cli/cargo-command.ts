// `reapi cargo [--endpoint grpc://HOST:PORT] -- CARGO_ARGS`: the user's own, unmodified cargo, with
// every build script compiled as usual but executed on the fleet; and `reapi build-script-runner
// BINARY`, which runs one build script on the fleet with the environment Cargo gave it (what the
// trampolines call, shaped like Cargo's proposed `host.runner`).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';

// Only light modules here: the gRPC client loads while cargo starts (see runCargo).
import { PolicyError } from '../clients/cargo/policy.ts';
import { DEFAULT_ENDPOINT, endpointAddress, policyFor } from '../clients/cargo/settings.ts';
import { clientEnv } from '../common/client-settings.ts';
import { addClientFlags, clientSettingsOf, type ClientFlags } from './client-flags.ts';
import { hostIsa } from '../common/host-isa.ts';
import type { BuildScriptRecord, CargoDaemon } from '../clients/cargo/daemon.ts';

// cli/ of the checkout, or dist/cli/ when compiled (scripts/build.sh): bin/ is at the checkout's top.
const BIN_DIR = resolve(dirname(fileURLToPath(import.meta.url)), import.meta.url.endsWith('.ts') ? '../bin' : '../../bin');
export const RUSTC_WRAPPER = join(BIN_DIR, 'reapi-rustc-wrapper');
export const BUILD_SCRIPT_RUNNER = join(BIN_DIR, 'reapi-build-script');

interface CargoFlags extends ClientFlags {
  endpoint?: string;
  instance?: string;
  policy?: string;
  cargo?: string;
  summaryJson?: string;
  quiet?: boolean;
}

async function runCargo(args: string[], flags: CargoFlags): Promise<number> {
  const endpoint = flags.endpoint ?? process.env.REAPI_ENDPOINT ?? DEFAULT_ENDPOINT;
  const instance = flags.instance ?? process.env.REAPI_INSTANCE ?? '';
  const cargo = flags.cargo ?? process.env.REAPI_CARGO ?? 'cargo';
  // Validated before cargo starts: a bad policy file fails at once.
  const policy = policyFor(flags.policy, process.cwd());
  const address = endpointAddress(endpoint);
  const dir = await mkdtemp(join(tmpdir(), 'reapi-cargo-'));
  await chmod(dir, 0o700);
  const socket = join(dir, `helper-${randomBytes(4).toString('hex')}.sock`);
  // The persistent expander of wasm macros (clients/expander/): the shim in rustc asks it.
  const expanderSocket = join(dir, 'expander.sock');
  const onResult = (r: BuildScriptRecord) => {
    if (process.env.REAPI_CARGO_VERBOSE) process.stderr.write(`reapi: build script of ${r.crate}: ${r.source} (exit ${r.exitCode}, ${r.ms} ms${r.timings ? `: ${Object.entries(r.timings).map(([k, v]) => `${k} ${v}`).join(', ')}` : ''})\n`);
    // Cargo shows a build script's stderr only when it fails: say it here.
    if (r.warning && r.exitCode === 0) process.stderr.write(`reapi: warning: build script of ${r.crate}: ${r.warning}\n`);
  };
  const client = clientSettingsOf(flags);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...clientEnv(client),
    RUSTC_WRAPPER: RUSTC_WRAPPER,
    REAPI_CARGO_SOCKET: socket,
    REAPI_EXPANDER_SOCKET: expanderSocket,
    REAPI_ENDPOINT: endpoint,
    REAPI_INSTANCE: instance,
    REAPI_BUILD_POLICY: policy.path ?? '',
  };
  // A wrapper the user already had (e.g. sccache) keeps running, after ours.
  const own = process.env.RUSTC_WRAPPER;
  if (own && resolve(own) !== RUSTC_WRAPPER) env.REAPI_NEXT_RUSTC_WRAPPER = own;
  // Cargo starts right away; the helper (gRPC client, daemon) loads meanwhile. Cargo runs no build
  // script before it has compiled one, and the trampolines wait for the socket a while anyway.
  const started = (async () => {
    const [{ connectExec }, { newInvocationId }, { startDaemon }, { startExpander }, { InProcessExpander }] = await Promise.all([
      import('../clients/remote-execution.ts'),
      import('../clients/cargo/build-script-action.ts'),
      import('../clients/cargo/daemon.ts'),
      import('../clients/expander/expander-server.ts'),
      import('../execution/wasm/in-process-expander.ts'),
    ]);
    const clients = connectExec(address, instance, client);
    const wasm = new InProcessExpander();
    try {
      const daemon = await startDaemon({ clients, endpoint, policy, invocationId: newInvocationId() }, socket, onResult);
      const expander = await startExpander({ socket: expanderSocket, expander: wasm, clients, platform: { ISA: hostIsa() } });
      return { clients, daemon, expander, wasm };
    } catch (e) {
      clients.close();
      await wasm.close();
      throw e;
    }
  })();
  started.catch((e: unknown) => process.stderr.write(`reapi: cannot start the build-script helper: ${(e as Error).message}\n`));
  let code: number;
  let daemon: CargoDaemon | undefined;
  try {
    code = await new Promise<number>((resolveCode, reject) => {
      const child = spawn(cargo, args, { stdio: 'inherit', env });
      const forward = (sig: NodeJS.Signals) => child.kill(sig);
      process.on('SIGINT', forward);
      process.on('SIGTERM', forward);
      child.once('error', (e) => reject(new Error(`cannot run ${cargo}: ${e.message} (choose it with --cargo PATH or REAPI_CARGO)`)));
      child.once('exit', (c, sig) => {
        process.off('SIGINT', forward);
        process.off('SIGTERM', forward);
        resolveCode(c ?? 128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 9));
      });
    });
  } finally {
    const helper = await started.catch(() => undefined);
    daemon = helper?.daemon;
    await helper?.daemon.close();
    await helper?.expander.close();
    await helper?.wasm.close();
    helper?.clients.close();
    await rm(dir, { recursive: true, force: true });
  }
  const r = daemon?.records ?? [];
  if (r.length > 0 && !flags.quiet) {
    const count = (s: string) => r.filter((x) => x.source === s).length;
    const failed = r.filter((x) => x.exitCode !== 0).length;
    process.stderr.write(
      `reapi: ${r.length} build script${r.length === 1 ? '' : 's'} on the fleet: ${count('hit')} cache hit${count('hit') === 1 ? '' : 's'}, ${count('executed')} executed` +
        `${count('error') ? `, ${count('error')} could not run` : ''}${failed ? `, ${failed} failed` : ''}\n`,
    );
  }
  const local = await locallyCompiledBuildScripts(process.env.CARGO_TARGET_DIR || join(process.cwd(), 'target'));
  if (local.length > 0 && !flags.quiet) {
    process.stderr.write(
      `reapi: ${local.length} build script${local.length === 1 ? ' was' : 's were'} compiled without reapi (by plain cargo) and ${local.length === 1 ? 'runs' : 'run'} locally when Cargo reruns ${local.length === 1 ? 'it' : 'them'}: ` +
        `${local.slice(0, 5).join(', ')}${local.length > 5 ? ', ...' : ''}; run \`cargo clean\` once to move them to the fleet\n`,
    );
  }
  if (flags.summaryJson) await writeFile(flags.summaryJson, JSON.stringify({ exitCode: code, buildScripts: r }, null, 2) + '\n');
  return code;
}

/**
 * Build-script binaries in a target directory that have no trampoline (no NAME.reapi-real beside
 * them): compiled by plain cargo. Cargo does not recompile them when only RUSTC_WRAPPER changes.
 * Names them by their build directory (PACKAGE-HASH).
 */
async function locallyCompiledBuildScripts(targetDir: string): Promise<string[]> {
  const out: string[] = [];
  const profiles = await readdir(targetDir, { withFileTypes: true }).catch(() => []);
  for (const p of profiles) {
    if (!p.isDirectory()) continue;
    for (const buildRoot of [join(targetDir, p.name, 'build'), join(targetDir, p.name, 'debug', 'build'), join(targetDir, p.name, 'release', 'build')]) {
      const dirs = await readdir(buildRoot).catch(() => [] as string[]);
      for (const d of dirs) {
        const files = await readdir(join(buildRoot, d)).catch(() => [] as string[]);
        const set = new Set(files);
        if (files.some((f) => /^build_script_\w+-[0-9a-f]+$/.test(f) && !set.has(`${f}.reapi-real`))) out.push(d);
      }
    }
  }
  return out.sort();
}

/** Registers `reapi cargo` and `reapi build-script-runner`. */
export function registerCargoCommands(program: Command): void {
  const exit = (code: number) => process.exit(code);
  const fail = (e: unknown) => {
    process.stderr.write(`reapi: ${(e as Error).message}\n`);
    process.exit(e instanceof PolicyError ? 2 : 1);
  };
  addClientFlags(program.command('cargo'))
    .description('run cargo with every build script executed on the fleet: reapi cargo [--endpoint grpc://HOST:PORT] -- build --release')
    .argument('[cargo-args...]', 'arguments for cargo (after --)')
    .option('--endpoint <url>', `the reapi endpoint (default $REAPI_ENDPOINT or ${DEFAULT_ENDPOINT})`)
    .option('--instance <name>', 'REAPI instance name (default $REAPI_INSTANCE or "")')
    .option('--policy <file>', 'build-script policy file (default $REAPI_BUILD_POLICY or reapi-build-policy.json in this directory or above)')
    .option('--cargo <program>', 'the cargo to run (default $REAPI_CARGO or cargo on PATH)')
    .option('--summary-json <file>', 'write what happened to each build script (cache hit, executed, exit code) as JSON')
    .option('--quiet', 'no summary line on stderr')
    .allowUnknownOption(true)
    .action((args: string[], flags: CargoFlags) => runCargo(args, flags).then(exit, fail));
  program
    .command('build-script-runner', { hidden: true })
    .description("run one compiled build script on the fleet with Cargo's environment (shaped like Cargo's proposed host.runner)")
    .argument('<binary>', 'the compiled build script')
    .argument('[args...]', 'its arguments')
    .option('--endpoint <url>', `the reapi endpoint (default $REAPI_ENDPOINT or ${DEFAULT_ENDPOINT})`)
    .option('--instance <name>', 'REAPI instance name')
    .option('--policy <file>', 'build-script policy file')
    .allowUnknownOption(true)
    .action((binary: string, args: string[], flags: CargoFlags) =>
      import('../clients/cargo/standalone.ts').then(({ runStandalone }) => runStandalone(binary, args, flags)).then(exit, fail),
    );
}
