// Helpers for the Cargo build-script tests and bench: Debian's cargo and rustc (what CI has; a
// rustup toolchain earlier on PATH is never used), copies of the test workspaces, plain `cargo`
// and `reapi cargo` runs with their output and `--summary-json`.
import { execFileSync, spawn } from 'node:child_process';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultToolchainDirs, discoverToolchains } from '../../worker/runners/rust-toolchains.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '../..');
export const CARGO = '/usr/bin/cargo';
export const RUSTC = '/usr/bin/rustc';
/** The crate graph on Debian's crate sources, with a build script of each kind. */
export const GRAPH_WORKSPACE = join(HERE, 'cargo-workspace');
/** One misbehaving build script per package. */
export const HOSTILE_WORKSPACE = join(HERE, 'cargo-hostile');
/** The packages of GRAPH_WORKSPACE that have a build script, as `reapi cargo` names them. */
export const GRAPH_BUILD_SCRIPTS = [
  'anyhow v1.0.69',
  'crc32fast v1.3.2',
  'libc v0.2.139',
  'libz-sys v1.1.8',
  'num-traits v0.2.15',
  'proc-macro2 v1.0.47',
  'reapi-cargo-demo v0.1.0',
  'serde v1.0.152',
  'typenum v1.16.0',
];

/** Why the cargo tests cannot run here, or false. */
export function cargoSkip(): string | false {
  if (process.getuid?.() !== 0) return 'the bwrap sandbox needs root';
  for (const f of [CARGO, RUSTC, '/usr/bin/bwrap', '/usr/bin/pkg-config']) if (!existsSync(f)) return `${f} is missing (scripts/bootstrap.sh --test installs it)`;
  if (!existsSync('/usr/share/cargo/registry/libz-sys-1.1.8')) return "Debian's librust-*-dev crate sources are missing (scripts/bootstrap.sh --test)";
  try {
    execFileSync('pkg-config', ['--exists', 'zlib']);
  } catch {
    return 'zlib1g-dev is missing';
  }
  return false;
}

/** A private copy of a workspace (cargo writes target/ and Cargo.lock into it); `prefix` as for mkdtemp, under the temp dir unless absolute. */
export async function copyWorkspace(src: string, prefix: string): Promise<{ dir: string; dispose(): Promise<void> }> {
  const base = await mkdtemp(isAbsolute(prefix) ? prefix : join(tmpdir(), prefix));
  const dir = join(base, 'ws');
  await cp(src, dir, { recursive: true, filter: (p) => !/\/target(\/|$)/.test(p.slice(src.length)) && !p.endsWith('Cargo.lock') });
  return { dir, dispose: () => rm(base, { recursive: true, force: true }) };
}

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export function runProcess(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Ran> {
  const t0 = performance.now();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    child.once('error', reject);
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? 128 + (sig ? 9 : 0), stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

/** The environment every cargo run gets: Debian's rustc, no wrapper or jobserver from outside. */
export function cargoEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { RUSTC: RUSTC, RUSTC_WRAPPER: '', CARGO_TERM_COLOR: 'never', ...extra };
}

/** Plain `cargo ARGS` in `dir`. */
export function cargo(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return runProcess(CARGO, args, { cwd: dir, env: cargoEnv(env) });
}

export interface BuildScriptRecord {
  crate: string;
  source: 'hit' | 'executed' | 'error';
  exitCode: number;
  actionDigest?: string;
  ms: number;
  warning?: string;
}

/** `reapi cargo --endpoint E --cargo CARGO --summary-json F -- ARGS` in `dir` (Debian's cargo unless `cargo` names another). */
export async function reapiCargo(
  dir: string,
  endpoint: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  flags: string[] = [],
  cargo = CARGO,
): Promise<Ran & { buildScripts: BuildScriptRecord[] }> {
  // Outside the workspace: files in a package directory are build-script inputs.
  const summary = join(dirname(dir), `reapi-summary-${Date.now()}.json`);
  const r = await runProcess(
    process.execPath,
    [join(REPO, 'bin/reapi.mjs'), 'cargo', '--endpoint', endpoint, '--cargo', cargo, '--summary-json', summary, ...flags, '--', ...args],
    { cwd: dir, env: cargoEnv(env) },
  );
  let buildScripts: BuildScriptRecord[] = [];
  try {
    buildScripts = (JSON.parse(await readFile(summary, 'utf8')) as { buildScripts: BuildScriptRecord[] }).buildScripts;
    await rm(summary, { force: true });
  } catch {
    // No summary: reapi cargo itself failed; the caller looks at stderr.
  }
  return { ...r, buildScripts };
}

/**
 * A rustup toolchain (the usual Rust setup) whose rustc is another release than Debian's, so a
 * test can tell which one a build script got: its directory, cargo, rustc and release.
 */
export async function rustupToolchain(): Promise<{ dir: string; cargo: string; rustc: string; release: string } | undefined> {
  // As workers find them (Debian's first: a rustup toolchain of the same release is left out).
  const found = (await discoverToolchains(await defaultToolchainDirs())).filter((t) => !t.system && existsSync(join(t.dir, 'bin', 'cargo')));
  const t = found.find((x) => basename(x.dir).startsWith('stable')) ?? found[0];
  return t && { dir: t.dir, cargo: join(t.dir, 'bin', 'cargo'), rustc: join(t.dir, 'bin', 'rustc'), release: t.release };
}

/** Crate names of the records, sorted. */
export const crates = (records: BuildScriptRecord[]): string[] => records.map((r) => r.crate).sort();
