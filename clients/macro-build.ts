// Building wasm proc macros, and checking that they build reproducibly (`reapi macro build` and
// `reapi macro verify`). Offline, with Debian's toolchain: /usr/bin/cargo with RUSTC=/usr/bin/rustc
// (a rustup toolchain earlier on PATH may lack the wasm32 target), the wasm32 standard library
// from libstd-rust-dev-wasm32, rust-lld from lld-14, and crates-io replaced by the Debian sources
// in /usr/share/cargo/registry. Build outputs go to a target directory outside the crate.
//
// verify: builds the crate's workspace a second time from a copy in another directory, with
// another CARGO_HOME, HOME, target directory, umask, TZ and locale, and compares the two modules
// byte for byte: what a registry would check before serving a precompiled macro.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const WASM_TARGET = 'wasm32-unknown-unknown';

export class MacroBuildError extends Error {
  override readonly name = 'MacroBuildError';
}

export interface Toolchain {
  cargo: string;
  rustc: string;
}

const DEBIAN_PACKAGES = 'rustc cargo libstd-rust-dev-wasm32 lld-14 librust-syn-dev librust-quote-dev librust-proc-macro2-dev';

/** Debian's cargo and rustc (REAPI_CARGO / REAPI_RUSTC override), checked for the wasm32 target. */
export async function findToolchain(env: NodeJS.ProcessEnv = process.env): Promise<Toolchain> {
  const cargo = env.REAPI_CARGO ?? '/usr/bin/cargo';
  const rustc = env.REAPI_RUSTC ?? '/usr/bin/rustc';
  for (const [what, path] of [
    ['cargo', cargo],
    ['rustc', rustc],
  ] as const) {
    if (!existsSync(path)) throw new MacroBuildError(`${what} not found at ${path}; install Debian's toolchain: apt-get install -y --no-install-recommends ${DEBIAN_PACKAGES}`);
  }
  const { stdout } = await execFileP(rustc, ['--print', 'sysroot']);
  const sysroot = stdout.trim();
  if (!existsSync(join(sysroot, 'lib/rustlib', WASM_TARGET))) {
    throw new MacroBuildError(`${rustc} has no ${WASM_TARGET} standard library (${join(sysroot, 'lib/rustlib', WASM_TARGET)}); apt-get install -y libstd-rust-dev-wasm32 lld-14`);
  }
  const lld = join(sysroot, 'lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld');
  if (!existsSync(lld) && !existsSync('/usr/bin/rust-lld')) throw new MacroBuildError('rust-lld is missing (it links wasm modules); apt-get install -y lld-14');
  return { cargo, rustc };
}

const CARGO_CONFIG = `# Written by reapi: crates come from Debian's sources, never from the network.
[source.crates-io]
replace-with = "debian"
[source.debian]
directory = "/usr/share/cargo/registry"
[net]
offline = true
`;

export interface BuildEnvironment {
  /** CARGO_HOME (gets the offline config.toml); also HOME. */
  cargoHome: string;
  targetDir: string;
  tz?: string;
  lang?: string;
  umask?: number;
  /** More variables (verify adds an unrelated one: builds must not depend on the environment). */
  extraEnv?: Record<string, string>;
}

interface CrateInfo {
  name: string;
  /** The cdylib's file stem (the lib target name). */
  libName: string;
  manifestPath: string;
  workspaceRoot: string;
}

/** Make `dir` a CARGO_HOME whose crates come from Debian's sources, offline. */
export async function offlineCargoHome(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.toml'), CARGO_CONFIG);
}

async function cargoEnv(tc: Toolchain, env: BuildEnvironment): Promise<NodeJS.ProcessEnv> {
  await offlineCargoHome(env.cargoHome);
  return {
    PATH: '/usr/bin:/bin',
    HOME: env.cargoHome,
    CARGO_HOME: env.cargoHome,
    CARGO_TARGET_DIR: env.targetDir,
    RUSTC: tc.rustc,
    CARGO_INCREMENTAL: '0',
    CARGO_TERM_COLOR: 'never',
    TZ: env.tz ?? 'UTC',
    LANG: env.lang ?? 'C.UTF-8',
    ...env.extraEnv,
  };
}

/** The package whose manifest is DIR/Cargo.toml, its cdylib and its workspace root. */
export async function crateInfo(tc: Toolchain, dir: string, env: NodeJS.ProcessEnv): Promise<CrateInfo> {
  const manifestPath = resolve(dir, 'Cargo.toml');
  if (!existsSync(manifestPath)) throw new MacroBuildError(`${dir} has no Cargo.toml`);
  let out: string;
  try {
    out = (await execFileP(tc.cargo, ['metadata', '--no-deps', '--format-version', '1', '--offline', '--manifest-path', manifestPath], { env, maxBuffer: 64 << 20 })).stdout;
  } catch (err) {
    throw new MacroBuildError(`cargo metadata failed for ${manifestPath}: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`);
  }
  const meta = JSON.parse(out) as {
    workspace_root: string;
    packages: Array<{ name: string; manifest_path: string; targets: Array<{ name: string; crate_types: string[] }> }>;
  };
  const pkg = meta.packages.find((p) => resolve(p.manifest_path) === manifestPath);
  if (!pkg) throw new MacroBuildError(`${manifestPath} is not a package (a virtual workspace?); give the macro crate's directory`);
  const lib = pkg.targets.find((t) => t.crate_types.includes('cdylib'));
  if (!lib) throw new MacroBuildError(`${pkg.name} has no cdylib target; a wasm macro needs [lib] crate-type = ["cdylib"]`);
  return { name: pkg.name, libName: lib.name.replace(/-/g, '_'), manifestPath, workspaceRoot: meta.workspace_root };
}

export interface BuiltMacro {
  name: string;
  wasmPath: string;
  wasm: Buffer;
  sha256: string;
  workspaceRoot: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string, umask: number | undefined): Promise<{ code: number; output: string }> {
  return new Promise((resolvePromise, reject) => {
    // umask applies to the whole build: run cargo under `sh -c 'umask N; exec cargo ...'`.
    const child =
      umask === undefined
        ? spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn('/bin/sh', ['-c', `umask ${umask.toString(8).padStart(3, '0')}; exec "$0" "$@"`, cmd, ...args], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolvePromise({ code: code ?? 1, output }));
  });
}

/** Build the macro crate in `dir` to wasm (release, `--locked` when a Cargo.lock exists). */
export async function buildMacro(dir: string, env: BuildEnvironment, tc?: Toolchain): Promise<BuiltMacro> {
  const toolchain = tc ?? (await findToolchain());
  const procEnv = await cargoEnv(toolchain, env);
  const info = await crateInfo(toolchain, dir, procEnv);
  const args = ['build', '--release', '--target', WASM_TARGET, '--lib', '--manifest-path', info.manifestPath, '-p', info.name];
  if (existsSync(join(info.workspaceRoot, 'Cargo.lock'))) args.push('--locked');
  const res = await run(toolchain.cargo, args, procEnv, info.workspaceRoot, env.umask);
  if (res.code !== 0) throw new MacroBuildError(`cargo build of ${info.name} for ${WASM_TARGET} failed:\n${res.output.trim()}`);
  const wasmPath = join(env.targetDir, WASM_TARGET, 'release', `${info.libName}.wasm`);
  const wasm = await readFile(wasmPath).catch(() => {
    throw new MacroBuildError(`cargo succeeded but ${wasmPath} is missing`);
  });
  return { name: info.name, wasmPath, wasm, sha256: createHash('sha256').update(wasm).digest('hex'), workspaceRoot: info.workspaceRoot };
}

/** Where `macro build` keeps its target directory for a workspace (reused across builds). */
export function defaultTargetDir(workspaceRoot: string): string {
  const key = createHash('sha256').update(resolve(workspaceRoot)).digest('hex').slice(0, 12);
  return join(tmpdir(), `reapi-macro-build-${key}`);
}

export interface VerifyResult {
  reproducible: boolean;
  first: BuiltMacro;
  second: BuiltMacro;
  /** Offset of the first differing byte (or the shorter length), when they differ. */
  firstDifference?: number;
}

const SKIP_COPY = new Set(['target', '.git', 'node_modules']);

/**
 * Build `dir` as `macro build` does, then again from a copy of its workspace in a fresh directory
 * with a different environment, and compare the modules.
 */
export async function verifyMacro(dir: string, opts: { targetDir?: string; keep?: boolean } = {}): Promise<VerifyResult> {
  const tc = await findToolchain();
  const scratch = await mkdtemp(join(tmpdir(), 'reapi-macro-verify-'));
  try {
    const probeEnv = await cargoEnv(tc, { cargoHome: join(scratch, 'probe-home'), targetDir: join(scratch, 'unused') });
    const info = await crateInfo(tc, dir, probeEnv);
    const first = await buildMacro(dir, { cargoHome: join(scratch, 'home-1'), targetDir: opts.targetDir ?? defaultTargetDir(info.workspaceRoot) }, tc);

    // The second build: the workspace copied elsewhere (a longer, different path), another
    // CARGO_HOME and HOME, a cold target directory, umask 077, another TZ and locale.
    const copyRoot = join(scratch, 'elsewhere', 'second-build-of', info.name);
    await mkdir(copyRoot, { recursive: true });
    await cp(info.workspaceRoot, copyRoot, {
      recursive: true,
      filter: (src) => !SKIP_COPY.has(relative(info.workspaceRoot, src).split('/').pop() ?? ''),
    });
    const copiedCrate = join(copyRoot, relative(info.workspaceRoot, resolve(dir)));
    const second = await buildMacro(
      copiedCrate,
      {
        cargoHome: join(scratch, 'home-2', 'cargo'),
        targetDir: join(scratch, 'target-2'),
        tz: 'Pacific/Chatham',
        lang: 'C',
        umask: 0o077,
        extraEnv: { REAPI_VERIFY_BUILD: '2', SOURCE_DATE_EPOCH: String(Math.floor(Date.now() / 1000)) },
      },
      tc,
    );
    const reproducible = first.wasm.equals(second.wasm);
    const result: VerifyResult = { reproducible, first, second };
    if (!reproducible) {
      let i = 0;
      const n = Math.min(first.wasm.length, second.wasm.length);
      while (i < n && first.wasm[i] === second.wasm[i]) i++;
      result.firstDifference = i;
    }
    return result;
  } finally {
    if (!opts.keep) await rm(scratch, { recursive: true, force: true });
  }
}

/** Size of a file, for messages. */
export async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}
