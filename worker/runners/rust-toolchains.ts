// The Rust toolchains a worker offers build scripts: Debian's rustc in /usr and rustup's
// toolchains (`$RUSTUP_HOME/toolchains/*`, default ~/.rustup), or the directories the operator
// names (`worker.buildScripts.toolchains`). Each is asked its release (`bin/rustc -vV`); the
// worker advertises them all as `rustc-release: "1.63.0|1.95.0"`, and a build script asking for
// a release runs with that toolchain's rustc as /usr/bin/rustc.
//
// Why provisioned rather than uploaded with every build: a toolchain is 1.4 GB, the same for
// every build of a company, and rustup already installs it content-checked; the release in the
// action's platform is part of the action key, so a build never gets another rustc's results.
import { execFile } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../../common/logger.ts';

const run = promisify(execFile);

export interface RustToolchain {
  /** e.g. "1.95.0". */
  release: string;
  /** The toolchain root (bin/rustc, lib/); resolved, no symlinks. */
  dir: string;
  /** True for the system's own (/usr): its rustc is a tool like any other, nothing to mount. */
  system: boolean;
}

/** Where to look when the operator names nothing: /usr, then every rustup toolchain. */
export async function defaultToolchainDirs(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const rustupHome = env.RUSTUP_HOME ?? join(env.HOME ?? homedir(), '.rustup');
  const toolchains = join(rustupHome, 'toolchains');
  const names = await readdir(toolchains).catch(() => [] as string[]);
  return ['/usr', ...names.sort().map((n) => join(toolchains, n))];
}

/** The toolchains of `dirs` that answer `rustc -vV`; the first of each release wins. */
export async function discoverToolchains(dirs: readonly string[], logger?: Logger): Promise<RustToolchain[]> {
  const found = new Map<string, RustToolchain>();
  for (const given of dirs) {
    const dir = await realpath(given).catch(() => undefined);
    if (!dir) continue;
    try {
      const { stdout } = await run(join(dir, 'bin', 'rustc'), ['-vV'], { timeout: 30_000, env: { PATH: '/usr/bin:/bin' } });
      const release = /^release: (\S+)$/m.exec(stdout)?.[1];
      if (release && !found.has(release)) found.set(release, { release, dir, system: dir === '/usr' });
    } catch (err) {
      if (given !== '/usr') logger?.warn({ dir: given, err }, 'not a usable Rust toolchain (bin/rustc -vV failed); build scripts cannot ask for it');
    }
  }
  return [...found.values()];
}

/**
 * A toolchain as the sandbox user can read it. bwrap binds it as that user, and rustup's
 * toolchains usually live where only their owner may go (/root/.rustup): the worker (root)
 * mirrors the toolchain into its state directory once, as hard links (a copy across
 * filesystems), and that mirror is what build scripts see.
 */
export async function exposeToolchain(t: RustToolchain, stateDir: string, logger?: Logger): Promise<RustToolchain> {
  if (t.system) return t;
  const dir = join(stateDir, 'toolchains', t.release);
  const stamp = join(dir, '.reapi-source');
  const source = `${t.dir}\n${(await stat(join(t.dir, 'bin', 'rustc'))).mtimeMs}\n`;
  if ((await readFile(stamp, 'utf8').catch(() => '')) === source) return { ...t, dir };
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(stateDir, 'toolchains'), { recursive: true, mode: 0o755 });
  await chmod(join(stateDir, 'toolchains'), 0o755);
  try {
    await run('cp', ['-al', t.dir, dir]);
  } catch {
    logger?.warn({ toolchain: t.dir }, 'the toolchain is on another filesystem than the worker directory: copying it (once)');
    await rm(dir, { recursive: true, force: true });
    await run('cp', ['-a', t.dir, dir]);
  }
  await chmod(dir, 0o755);
  await writeFile(stamp, source);
  return { ...t, dir };
}
