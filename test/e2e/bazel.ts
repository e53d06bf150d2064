// Harness for end-to-end tests that drive a real Bazel (Debian's bazel-bootstrap 4.2.3) against the
// workspace in test/e2e/workspace. Each Bazel instance works on a private copy of the workspace,
// with its own output_user_root and HOME under a fresh temp dir, so tests never write into the repo
// and can run side by side. Bazel runs offline: see the WORKSPACE for the local stand-ins.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { findOnPath } from '../support/commands.ts';
import { fileURLToPath } from 'node:url';

/** The workspace shipped with the tests. */
export const DEFAULT_WORKSPACE = resolve(dirname(fileURLToPath(import.meta.url)), 'workspace');

/** Where Debian's bazel-bootstrap keeps its install base. */
export const DEFAULT_INSTALL_BASE = '/usr/share/bazel';

/** Bazel binary: `$REAPI_E2E_BAZEL` or `bazel` on PATH. */
const BAZEL_BIN = process.env['REAPI_E2E_BAZEL'] ?? 'bazel';

/**
 * Spawns of the default workspace that are not "internal" (8 Genrule, 7 CppCompile, 5 CppLink,
 * 1 TreeDir, 1 TreeListing, 4 TestRunner) for `bazel test //...`; the summary line adds 14 internal.
 */
export const WORKSPACE_SPAWNS = 26;

/** Outputs of the default workspace (paths relative to bazel-bin) and their exact sizes. */
export const WORKSPACE_OUTPUTS: ReadonlyArray<{ path: string; size: number; executable?: boolean }> = [
  { path: 'gen/words.txt', size: 2000 },
  { path: 'gen/words_upper.txt', size: 2000 },
  { path: 'gen/words_summary.txt', size: 24 },
  { path: 'gen/big_input_upper.txt', size: 40960 },
  { path: 'gen/big_input_digest.txt', size: 71 },
  { path: 'gen/big_output.txt', size: 5242880 },
  { path: 'cc/hello_output.txt', size: 29 },
  { path: 'tree/tree/a.txt', size: 6 },
  { path: 'tree/tree/b.txt', size: 292 },
  { path: 'tree/tree/bin/tool.sh', size: 29, executable: true },
  { path: 'tree/tree/sub/copy.txt', size: 24 },
  { path: 'tree/tree/sub/nested/deep.txt', size: 10 },
  { path: 'tree/tree_listing.txt', size: 82 },
  { path: 'tree/tree_consumer.txt', size: 34 },
];

export interface RunResult {
  /** Exit code; -1 if the client was killed (timeout or signal). */
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

export interface RunOptions {
  /** Kill the Bazel client after this long (default 10 minutes). */
  timeoutMs?: number;
}

export type RemoteMode = 'cache' | 'executor';

export interface RemoteFlagOptions {
  /** REAPI instance name (default "main"). */
  instanceName?: string;
}

export interface CreateBazelOptions {
  /** Workspace to copy (default: test/e2e/workspace). */
  workspace?: string;
  /** Extra startup options, placed before the command. */
  startupFlags?: string[];
}

/**
 * Process counts from the summary line, e.g.
 * `INFO: 40 processes: 14 internal, 26 linux-sandbox.` or
 * `INFO: 40 processes: 26 remote cache hit, 14 internal.` (Bazel 4.2.3 also counts --disk_cache
 * hits as "remote cache hit"). Unknown kinds are kept in `counts` under their camelCased name.
 */
export interface ProcessSummary {
  total: number;
  internal: number;
  remoteCacheHit: number;
  diskCacheHit: number;
  actionCacheHit: number;
  remote: number;
  local: number;
  linuxSandbox: number;
  processwrapperSandbox: number;
  sandbox: number;
  worker: number;
  /** total - internal: the spawns that really ran or were looked up. */
  nonInternal: number;
  /** Every kind as printed, camelCased ("remote cache hit" -> remoteCacheHit). */
  counts: Record<string, number>;
  /** The line as printed, without the "INFO: " prefix. */
  line: string;
}

const SUMMARY_RE = /(?:^|\n)(?:INFO: )?((\d+) process(?:es)?(?:: ([^\n]*?))?\.?)[ \t]*(?=\r?\n|$)/g;
// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;

function camelCase(kind: string): string {
  return kind
    .trim()
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w.length > 0)
    .map((w, i) => (i === 0 ? w : w[0]!.toUpperCase() + w.slice(1)))
    .join('');
}

/** Parses the last process summary line in Bazel's output (stderr); undefined if there is none. */
export function parseProcessSummary(output: string): ProcessSummary | undefined {
  const text = output.replace(ANSI_RE, '').replace(/\r(?!\n)/g, '\n');
  let last: RegExpExecArray | undefined;
  for (const m of text.matchAll(SUMMARY_RE)) last = m;
  if (last === undefined) return undefined;
  const counts: Record<string, number> = {};
  for (const part of (last[3] ?? '').split(',')) {
    const m = /^\s*(\d+)\s+(.+?)\s*$/.exec(part);
    if (m === null) continue;
    const key = camelCase(m[2]!);
    counts[key] = (counts[key] ?? 0) + Number(m[1]);
  }
  const total = Number(last[2]);
  const get = (k: string): number => counts[k] ?? 0;
  return {
    total,
    internal: get('internal'),
    remoteCacheHit: get('remoteCacheHit'),
    diskCacheHit: get('diskCacheHit'),
    actionCacheHit: get('actionCacheHit'),
    remote: get('remote'),
    local: get('local'),
    linuxSandbox: get('linuxSandbox'),
    processwrapperSandbox: get('processwrapperSandbox'),
    sandbox: get('sandbox'),
    worker: get('worker'),
    nonInternal: total - get('internal'),
    counts,
    line: last[1]!.trim(),
  };
}

/** True when there was at least one non-internal process and every one was a remote cache hit. */
export function allRemoteCacheHits(s: ProcessSummary): boolean {
  return s.nonInternal > 0 && s.remoteCacheHit === s.nonInternal;
}

/** Parses `INFO: Build completed successfully, 40 total actions` (last occurrence). */
export function parseTotalActions(output: string): number | undefined {
  const all = [...output.replace(ANSI_RE, '').matchAll(/, (\d+) total actions?/g)];
  const last = all.at(-1);
  return last === undefined ? undefined : Number(last[1]);
}

/** Whether a Bazel binary and its install base are present. */
export function bazelAvailable(): boolean {
  return findOnPath(BAZEL_BIN) !== undefined && existsSync(join(DEFAULT_INSTALL_BASE, 'A-server.jar'));
}

/** The flags that point Bazel at our server (see the notes). */
export function remoteFlags(endpoint: string, mode: RemoteMode, opts: RemoteFlagOptions = {}): string[] {
  const url = /^[a-z]+:\/\//.test(endpoint) ? endpoint : `grpc://${endpoint}`;
  const flags =
    mode === 'executor'
      ? [`--remote_executor=${url}`, '--spawn_strategy=remote']
      : [`--remote_cache=${url}`];
  return [
    ...flags,
    `--remote_instance_name=${opts.instanceName ?? 'main'}`,
    '--incompatible_strict_action_env',
    '--remote_timeout=60',
    '--test_output=errors',
  ];
}

export interface Bazel {
  /** Root temp dir holding everything below. */
  readonly root: string;
  /** Private copy of the workspace (named "workspace", so its bazel-workspace link is ignored). */
  readonly workspace: string;
  readonly outputUserRoot: string;
  readonly home: string;
  /** Startup options used for every command. */
  readonly startupFlags: readonly string[];
  run(args: string[], opts?: RunOptions): Promise<RunResult>;
  remoteFlags(endpoint: string, mode: RemoteMode, opts?: RemoteFlagOptions): string[];
  /** `bazel info KEY`, trimmed; throws on failure. */
  info(key: string): Promise<string>;
  /** Absolute bazel-bin directory (`bazel info bazel-bin`, cached). */
  bazelBin(): Promise<string>;
  /** Absolute path of an output: "gen/x.txt" or "//gen:x.txt" (relative to bazel-bin). */
  outputPath(path: string): Promise<string>;
  /** Contents of a built output, see outputPath. */
  outputFile(path: string): Promise<Buffer>;
  /** `bazel clean` (or `clean --expunge`); throws on failure. */
  clean(opts?: { expunge?: boolean }): Promise<void>;
  /** Stops the Bazel server (no-op if none is running). */
  shutdown(): Promise<void>;
  /** shutdown() and remove all temp dirs. */
  dispose(): Promise<void>;
}

/** "//gen:x.txt" -> "gen/x.txt", ":x" / "gen/x.txt" unchanged apart from leading slashes. */
function outputRelPath(path: string): string {
  const m = /^(?:@[^/]*)?\/\/([^:]*):(.+)$/.exec(path);
  if (m !== null) return m[1] === '' ? m[2]! : `${m[1]}/${m[2]}`;
  return path.replace(/^\/+/, '');
}

function check(what: string, r: RunResult): RunResult {
  if (r.code !== 0) {
    throw new Error(`bazel ${what} exited with ${r.code}${r.timedOut ? ' (timed out)' : ''}:\n${r.stderr.slice(-4000)}`);
  }
  return r;
}

class BazelImpl implements Bazel {
  private bin: string | undefined;
  private disposed = false;

  constructor(
    readonly root: string,
    readonly workspace: string,
    readonly outputUserRoot: string,
    readonly home: string,
    readonly startupFlags: readonly string[],
  ) {}

  run(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: this.home };
    // Running under another Bazel's test runner would change Bazel's defaults.
    for (const k of ['TEST_TMPDIR', 'BAZELISK_HOME', 'USE_BAZEL_VERSION']) delete env[k];
    const started = Date.now();
    return new Promise((resolvePromise, reject) => {
      // stdin ignored: bash reading a piped stdin would source ~/.bashrc (see the notes).
      const child = spawn(BAZEL_BIN, [...this.startupFlags, ...args], {
        cwd: this.workspace,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      let timedOut = false;
      let killTimer: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGTERM');
        killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
      }, timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        if (killTimer !== undefined) clearTimeout(killTimer);
        resolvePromise({
          code: code ?? -1,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
          timedOut,
          durationMs: Date.now() - started,
        });
      });
    });
  }

  remoteFlags(endpoint: string, mode: RemoteMode, opts?: RemoteFlagOptions): string[] {
    return remoteFlags(endpoint, mode, opts);
  }

  async info(key: string): Promise<string> {
    return check(`info ${key}`, await this.run(['info', key])).stdout.trim();
  }

  async bazelBin(): Promise<string> {
    this.bin ??= await this.info('bazel-bin');
    return this.bin;
  }

  async outputPath(path: string): Promise<string> {
    return join(await this.bazelBin(), outputRelPath(path));
  }

  async outputFile(path: string): Promise<Buffer> {
    return readFile(await this.outputPath(path));
  }

  async clean(opts: { expunge?: boolean } = {}): Promise<void> {
    check('clean', await this.run(opts.expunge === true ? ['clean', '--expunge'] : ['clean']));
  }

  async shutdown(): Promise<void> {
    if (!existsSync(this.workspace)) return;
    await this.run(['shutdown'], { timeoutMs: 60_000 });
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    try {
      await this.shutdown();
    } finally {
      await makeWritable(this.root);
      await rm(this.root, { recursive: true, force: true });
    }
  }
}

/** Bazel leaves read-only files and dirs in its output base; rm needs them writable. */
async function makeWritable(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  const r = spawnSync('chmod', ['-R', 'u+w', dir], { stdio: 'ignore' });
  if (r.status === 0) return;
  const walk = async (p: string): Promise<void> => {
    const st = await stat(p).catch(() => undefined);
    if (st === undefined || !st.isDirectory()) return;
    await chmod(p, st.mode | 0o700).catch(() => undefined);
    for (const e of await readdir(p, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(p, e.name));
    }
  };
  await walk(dir);
}

/**
 * Copies the workspace to a fresh temp dir and returns a Bazel bound to it. Startup flags:
 * --nosystem_rc --nohome_rc --install_base=/usr/share/bazel --trust_install_base
 * --output_user_root=<tmp>/out --max_idle_secs=300 (so a leaked server eventually exits).
 */
export async function createBazel(opts: CreateBazelOptions = {}): Promise<Bazel> {
  const source = resolve(opts.workspace ?? DEFAULT_WORKSPACE);
  const root = await mkdtemp(join(tmpdir(), 'reapi-bazel-'));
  const workspace = join(root, 'workspace');
  const outputUserRoot = join(root, 'out');
  const home = join(root, 'home');
  await Promise.all([mkdir(outputUserRoot), mkdir(home)]);
  // Skip bazel-* convenience links left by someone running Bazel in the source workspace.
  await cp(source, workspace, {
    recursive: true,
    filter: (src) => !(dirname(src) === source && basename(src).startsWith('bazel-')),
  });
  const startupFlags = [
    '--nosystem_rc',
    '--nohome_rc',
    ...(existsSync(DEFAULT_INSTALL_BASE) ? [`--install_base=${DEFAULT_INSTALL_BASE}`, '--trust_install_base'] : []),
    `--output_user_root=${outputUserRoot}`,
    '--max_idle_secs=300',
    ...(opts.startupFlags ?? []),
  ];
  return new BazelImpl(root, workspace, outputUserRoot, home, startupFlags);
}
