// One Cargo build script as a remote action: what Cargo hands a build script (the binary, its
// package directory, its environment) becomes an Action with a deterministic digest; a cache hit
// or an execution on the fleet gives back what the script would have done locally: OUT_DIR's
// contents, stdout (the `cargo:` directives) and stderr with sandbox paths mapped back to host
// paths, and the exit code.
//
// Input root (the worker's BuildScriptRunner enforces the policy; see its header):
//   .reapi/build-script-build  .reapi/policy.json  .reapi/dep/N/  src/ (the package)  out/ (OUT_DIR)
import { hostIsa } from '../../common/host-isa.ts';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rm, stat, symlink, writeFile, chmod } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { promisify } from 'node:util';

import { digestOf, type Digest } from '../../common/digest.ts';
import { decode, encode, type MessageInput, type MessageOutput } from '../../protos/index.ts';
import { unary } from '../grpc-calls.ts';
import { execute, lookupActionResult, readBlob, uploadBlobs, type ActionResult, type ExecClients } from '../remote-execution.ts';
import { BUILD_SCRIPT_PROPERTY, BUILD_SCRIPT_PROTOCOL, CANONICAL_ROOT, LAYOUT, RUSTC_RELEASE_PROPERTY, type ActionPolicy } from '../../execution/build-script.ts';
import { passedEnv, resolvePolicy, type LoadedPolicy } from './policy.ts';

const run = promisify(execFile);

/** What Cargo asked for: run this build script here with this environment. */
export interface BuildScriptRequest {
  /** The real build-script binary (absolute). */
  binary: string;
  args: string[];
  /** Where Cargo started it (the package directory). */
  cwd: string;
  env: Record<string, string>;
}

export interface BuildScriptResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  /** "name vVERSION". */
  crate: string;
  /** 'hit': ActionCache hit; 'executed': ran on the fleet; 'error': never got a result. */
  source: 'hit' | 'executed' | 'error';
  actionDigest?: Digest;
  /** What the server said besides the result (e.g. that verification found the script nondeterministic). */
  warning?: string;
  /** Milliseconds per phase: prepare (hash, build the action), lookup, upload, execute, fetch (outputs). */
  timings?: Record<string, number>;
}

export interface ClientContext {
  clients: ExecClients;
  endpoint: string;
  policy: LoadedPolicy;
  /** Groups every action of one `reapi cargo` run in logs (RequestMetadata.tool_invocation_id). */
  invocationId: string;
  /** Digests of files already hashed, by path + size + mtime + inode (kept across build scripts by the daemon). */
  digests?: Map<string, Digest>;
  /** rustc release by RUSTC path (kept across build scripts by the daemon). */
  rustcReleases?: Map<string, Promise<string>>;
}

/** Build-script environment variables Cargo sets, by exact name or prefix. */
const CARGO_SET = new Set(['CARGO', 'CARGO_MANIFEST_DIR', 'CARGO_MANIFEST_LINKS', 'CARGO_ENCODED_RUSTFLAGS', 'OUT_DIR', 'TARGET', 'HOST', 'NUM_JOBS', 'OPT_LEVEL', 'DEBUG', 'PROFILE', 'RUSTC', 'RUSTDOC', 'RUSTC_LINKER']);
const CARGO_SET_PREFIXES = ['CARGO_PKG_', 'CARGO_CFG_', 'CARGO_FEATURE_', 'DEP_'];
/** System directories whose paths are the same on every machine: never copied into the action. */
const SYSTEM_PREFIXES = ['/usr/', '/lib/', '/lib64/', '/etc/', '/opt/'];

const byUtf8 = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** A Directory tree being assembled: files by name point at host paths or in-memory content. */
interface DirNode {
  files: Map<string, { digest: Digest; executable: boolean; path?: string; data?: Buffer }>;
  dirs: Map<string, DirNode>;
  symlinks: Map<string, string>;
}
const newDir = (): DirNode => ({ files: new Map(), dirs: new Map(), symlinks: new Map() });

class TreeBuilder {
  readonly root = newDir();
  /** Blobs by hash: where to get the bytes when the CAS misses them. */
  readonly sources = new Map<string, { path?: string; data?: Buffer; size: number }>();

  constructor(private readonly digests: Map<string, Digest>) {}

  dir(path: string): DirNode {
    let d = this.root;
    for (const part of path.split('/').filter(Boolean)) {
      let next = d.dirs.get(part);
      if (!next) d.dirs.set(part, (next = newDir()));
      d = next;
    }
    return d;
  }

  addData(path: string, data: Buffer, executable = false): void {
    const digest = digestOf(data);
    this.sources.set(digest.hash, { data, size: data.length });
    this.dir(dirname(path)).files.set(path.split('/').pop()!, { digest, executable, data });
  }

  /** Files being read at once (a big package must not run out of file descriptors). */
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  private async limited<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= 32) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }

  async addFile(path: string, host: string): Promise<void> {
    const st = await stat(host);
    const key = `${host}\0${st.size}\0${st.mtimeMs}\0${st.ino}`;
    let digest = this.digests.get(key);
    if (!digest) {
      digest = digestOf(await this.limited(() => readFile(host)));
      this.digests.set(key, digest);
    }
    this.sources.set(digest.hash, { path: host, size: digest.size_bytes });
    this.dir(dirname(path)).files.set(path.split('/').pop()!, { digest, executable: (st.mode & 0o111) !== 0, path: host });
  }

  /** Adds a host directory's files under `path`, skipping what `skip` says (by absolute host path). */
  async addTree(path: string, host: string, skip: (abs: string, isDir: boolean) => Promise<boolean>, depth = 0): Promise<void> {
    this.dir(path);
    if (depth > 64) return;
    const entries = await readdir(host, { withFileTypes: true });
    await Promise.all(
      entries.map(async (e) => {
        const abs = join(host, e.name);
        const rel = path ? `${path}/${e.name}` : e.name;
        let isDir = e.isDirectory();
        let isFile = e.isFile();
        if (e.isSymbolicLink()) {
          // Followed: the action gets the content (absolute links are not portable).
          const st = await stat(abs).catch(() => undefined);
          if (!st) return;
          isDir = st.isDirectory();
          isFile = st.isFile();
        }
        if (await skip(abs, isDir)) return;
        if (isDir) await this.addTree(rel, abs, skip, depth + 1);
        else if (isFile) await this.addFile(rel, abs);
      }),
    );
  }

  /** Encodes every Directory (canonical: sorted, no defaults); returns the root digest. */
  finish(): { root: Digest; directories: Buffer[] } {
    const directories: Buffer[] = [];
    const walk = (d: DirNode): Digest => {
      const msg: MessageInput<'Directory'> = {};
      const files = [...d.files.keys()].sort(byUtf8).map((name) => {
        const f = d.files.get(name)!;
        return f.executable ? { name, digest: f.digest, is_executable: true } : { name, digest: f.digest };
      });
      const dirs = [...d.dirs.keys()].sort(byUtf8).map((name) => ({ name, digest: walk(d.dirs.get(name)!) }));
      const links = [...d.symlinks.keys()].sort(byUtf8).map((name) => ({ name, target: d.symlinks.get(name)! }));
      if (files.length) msg.files = files;
      if (dirs.length) msg.directories = dirs;
      if (links.length) msg.symlinks = links;
      const data = encode('Directory', msg);
      directories.push(data);
      const digest = digestOf(data);
      this.sources.set(digest.hash, { data, size: data.length });
      return digest;
    };
    return { root: walk(this.root), directories };
  }
}

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

async function rustcRelease(ctx: ClientContext, rustc: string): Promise<string> {
  const cache = (ctx.rustcReleases ??= new Map());
  let p = cache.get(rustc);
  if (!p) {
    p = run(rustc, ['-vV'], { timeout: 60_000 }).then(({ stdout }) => {
      const m = /^release: (\S+)$/m.exec(stdout);
      if (!m) throw new Error(`\`${rustc} -vV\` does not say its release`);
      return m[1]!;
    });
    cache.set(rustc, p);
    p.catch(() => cache.delete(rustc));
  }
  return p;
}

export interface PreparedBuildScript {
  crate: string;
  policy: ActionPolicy;
  actionDigest: Digest;
  /** Blob sources by hash (host files or in-memory messages). */
  sources: Map<string, { path?: string; data?: Buffer; size: number }>;
  /** Sandbox path prefix -> host path, longest first. */
  pathMap: Array<[string, string]>;
  outDir: string;
  metadata: MessageInput<'RequestMetadata'>;
}

/** Builds the Action of one build-script run (nothing is uploaded). */
export async function prepareBuildScript(ctx: ClientContext, req: BuildScriptRequest): Promise<PreparedBuildScript> {
  const env = req.env;
  const name = env.CARGO_PKG_NAME ?? 'unknown';
  const version = env.CARGO_PKG_VERSION ?? '0.0.0';
  const crate = `${name} v${version}`;
  const manifestDir = resolve(env.CARGO_MANIFEST_DIR ?? req.cwd);
  const outDirRaw = env.OUT_DIR;
  if (!outDirRaw) throw new Error(`the build script of ${crate} was started without OUT_DIR: is this Cargo running it?`);
  const outDir = resolve(outDirRaw);
  const policy = resolvePolicy(ctx.policy, name, version);
  const tree = new TreeBuilder((ctx.digests ??= new Map()));
  const root = CANONICAL_ROOT;
  const pathMap: Array<[string, string]> = [
    [`${root}/${LAYOUT.out}`, outDir],
    [`${root}/${LAYOUT.src}`, manifestDir],
  ];

  // The package's sources: everything under its directory but build output and VCS metadata.
  await tree.addTree(LAYOUT.src, manifestDir, async (abs, isDir) => {
    if (!isDir) return false;
    const base = abs.split(sep).pop();
    if (base === '.git' || base === '.hg' || base === '.svn') return true;
    if (isUnder(outDir, abs)) return true; // a target directory inside the package
    return exists(join(abs, 'CACHEDIR.TAG'));
  });
  tree.dir(LAYOUT.out);
  await tree.addFile(LAYOUT.binary, req.binary);
  tree.addData(LAYOUT.policy, Buffer.from(JSON.stringify(policy) + '\n'));

  // The environment Cargo gave the script: its own variables and the policy's host ones, with host
  // paths rewritten to sandbox paths. DEP_* values naming host files (another package's OUT_DIR,
  // say) bring those files along.
  const passed = new Set(passedEnv(ctx.policy, name));
  const cmdEnv: Record<string, string> = {};
  let depIndex = 0;
  const rewrite = (value: string): string => {
    for (const [sandbox, host] of pathMap) {
      if (value === host || value.startsWith(host + sep)) return sandbox + value.slice(host.length);
    }
    return value;
  };
  for (const key of Object.keys(env).sort(byUtf8)) {
    const value = env[key]!;
    const cargoSet = CARGO_SET.has(key) || CARGO_SET_PREFIXES.some((p) => key.startsWith(p));
    if (!cargoSet && !passed.has(key)) continue;
    if (key === 'RUSTC' || key === 'RUSTDOC' || key === 'CARGO') {
      cmdEnv[key] = `/usr/bin/${key.toLowerCase()}`;
      continue;
    }
    if (key === 'RUSTC_LINKER') {
      cmdEnv[key] = value.includes('/') ? `/usr/bin/${value.split('/').pop()}` : value;
      continue;
    }
    let v = rewrite(value);
    if (key.startsWith('DEP_') && v === value && value.startsWith('/') && !SYSTEM_PREFIXES.some((p) => value.startsWith(p))) {
      const st = await stat(value).catch(() => undefined);
      if (st) {
        const sandbox = `${root}/${LAYOUT.deps}/${depIndex++}`;
        const rel = `${LAYOUT.deps}/${depIndex - 1}`;
        if (st.isDirectory()) await tree.addTree(rel, value, async () => false);
        else await tree.addFile(rel, value);
        pathMap.push([sandbox, value]);
        v = sandbox;
      }
    }
    cmdEnv[key] = v;
  }
  cmdEnv.PATH = '/usr/bin:/bin';
  pathMap.sort((a, b) => b[0].length - a[0].length);

  const { root: inputRoot } = tree.finish();
  const platform: Record<string, string> = {
    ISA: hostIsa(),
    OSFamily: 'Linux',
    [BUILD_SCRIPT_PROPERTY]: BUILD_SCRIPT_PROTOCOL,
    [RUSTC_RELEASE_PROPERTY]: await rustcRelease(ctx, env.RUSTC ?? 'rustc'),
  };
  const command: MessageInput<'Command'> = {
    arguments: [`${root}/${LAYOUT.binary}`, ...req.args],
    environment_variables: Object.keys(cmdEnv)
      .sort(byUtf8)
      .map((k) => ({ name: k, value: cmdEnv[k]! })),
    output_directories: [LAYOUT.out],
    platform: { properties: Object.keys(platform).sort(byUtf8).map((k) => ({ name: k, value: platform[k]! })) },
  };
  const commandBlob = encode('Command', command);
  const commandDigest = digestOf(commandBlob);
  tree.sources.set(commandDigest.hash, { data: commandBlob, size: commandBlob.length });
  const seconds = Math.ceil(policy.limits.timeoutSeconds);
  const actionBlob = encode('Action', { command_digest: commandDigest, input_root_digest: inputRoot, timeout: { seconds } });
  const actionDigest = digestOf(actionBlob);
  tree.sources.set(actionDigest.hash, { data: actionBlob, size: actionBlob.length });
  return {
    crate,
    policy,
    actionDigest,
    sources: tree.sources,
    pathMap,
    outDir,
    metadata: {
      tool_details: { tool_name: 'reapi-cargo', tool_version: '1' },
      action_id: actionDigest.hash,
      tool_invocation_id: ctx.invocationId,
      action_mnemonic: 'CargoBuildScript',
      target_id: crate,
    },
  };
}

/** Uploads the blobs the CAS does not have (FindMissingBlobs first). */
async function uploadMissingSources(c: ExecClients, sources: PreparedBuildScript['sources']): Promise<number> {
  const digests = [...sources].filter(([, s]) => s.size > 0).map(([hash, s]) => ({ hash, size_bytes: s.size }));
  const missing: Digest[] = [];
  for (let i = 0; i < digests.length; i += 4000) {
    const res = await unary(c.cas, c.cas.FindMissingBlobs, { instance_name: c.instance, blob_digests: digests.slice(i, i + 4000) });
    for (const d of res.missing_blob_digests) missing.push({ hash: d.hash, size_bytes: Number(d.size_bytes) });
  }
  for (let i = 0; i < missing.length; i += 64) {
    const datas = await Promise.all(missing.slice(i, i + 64).map(async (d) => {
      const s = sources.get(d.hash)!;
      return s.data ?? (await readFile(s.path!));
    }));
    await uploadBlobs(c, datas);
  }
  return missing.length;
}

/** Sandbox paths in a build script's output mapped back to host paths. */
function mapBack(buf: Buffer, pathMap: Array<[string, string]>): Buffer {
  let text = buf.toString('latin1');
  for (const [sandbox, host] of pathMap) text = text.split(sandbox).join(Buffer.from(host).toString('latin1'));
  return Buffer.from(text, 'latin1');
}

/** Replaces OUT_DIR's contents with the output directory of the result. */
async function writeOutDir(c: ExecClients, result: ActionResult, outDir: string, pathMap: Array<[string, string]>): Promise<void> {
  await mkdir(outDir, { recursive: true });
  for (const e of await readdir(outDir)) await rm(join(outDir, e), { recursive: true, force: true });
  const d = result.output_directories.find((o) => o.path === LAYOUT.out);
  if (!d) return;
  const tree = decode('Tree', await readBlob(c, d.tree_digest));
  const byDigest = new Map<string, MessageOutput<'Directory'>>();
  for (const child of tree.children) byDigest.set(digestOf(encode('Directory', child as MessageInput<'Directory'>)).hash, child);
  const jobs: Array<() => Promise<void>> = [];
  const walk = async (dir: MessageOutput<'Directory'>, host: string): Promise<void> => {
    await mkdir(host, { recursive: true });
    for (const f of dir.files) {
      jobs.push(async () => {
        const data = await readBlob(c, f.digest);
        await writeFile(join(host, f.name), data, { mode: f.is_executable ? 0o755 : 0o644 });
        if (f.is_executable) await chmod(join(host, f.name), 0o755);
      });
    }
    // Links to sandbox paths point at the same place on the host.
    for (const s of dir.symlinks) await symlink(mapBack(Buffer.from(s.target), pathMap).toString(), join(host, s.name));
    for (const sub of dir.directories) {
      const child = byDigest.get(sub.digest!.hash);
      if (!child) throw new Error(`the output Tree lacks directory ${sub.name}`);
      await walk(child, join(host, sub.name));
    }
  };
  if (tree.root) await walk(tree.root, outDir);
  for (let i = 0; i < jobs.length; i += 16) await Promise.all(jobs.slice(i, i + 16).map((j) => j()));
}

const message = (crate: string, text: string) => Buffer.from(`reapi: build script of ${crate}: ${text}\n`);

/** Runs one build script through the fleet and returns what it printed and how it exited. */
export async function runBuildScript(ctx: ClientContext, req: BuildScriptRequest): Promise<BuildScriptResult> {
  const crate = `${req.env.CARGO_PKG_NAME ?? 'unknown'} v${req.env.CARGO_PKG_VERSION ?? '?'}`;
  const timings: Record<string, number> = {};
  let mark = performance.now();
  const lap = (name: string) => {
    const t = performance.now();
    timings[name] = Math.round(t - mark);
    mark = t;
  };
  let prepared: PreparedBuildScript;
  try {
    prepared = await prepareBuildScript(ctx, req);
  } catch (e) {
    return { exitCode: 1, stdout: Buffer.alloc(0), stderr: message(crate, `cannot prepare the remote action: ${(e as Error).message}`), crate, source: 'error' };
  }
  lap('prepare');
  const c = ctx.clients;
  try {
    let result = await lookupActionResult(c, prepared.actionDigest, { inline: true, requestMetadata: prepared.metadata });
    let source: BuildScriptResult['source'] = 'hit';
    let warning = '';
    lap('lookup');
    if (!result) {
      source = 'executed';
      await uploadMissingSources(c, prepared.sources);
      lap('upload');
      let outcome = await execute(c, prepared.actionDigest, { requestMetadata: prepared.metadata, deadlineMs: (prepared.policy.limits.timeoutSeconds + 600) * 1000 });
      let st = outcome.response.status;
      if (st && st.code === 9 /* FAILED_PRECONDITION */ && /missing|not found/i.test(st.message)) {
        // Blobs evicted between upload and execution: upload again, once.
        await uploadMissingSources(c, prepared.sources);
        outcome = await execute(c, prepared.actionDigest, { requestMetadata: prepared.metadata, deadlineMs: (prepared.policy.limits.timeoutSeconds + 600) * 1000 });
        st = outcome.response.status;
      }
      if (st && st.code !== 0 && !outcome.response.result) {
        return { exitCode: 1, stdout: Buffer.alloc(0), stderr: message(prepared.crate, explainStatus(st.code, st.message)), crate: prepared.crate, source: 'error', actionDigest: prepared.actionDigest };
      }
      result = outcome.response.result ?? undefined;
      if (!result) throw new Error('the fleet answered without a result');
      warning = outcome.response.message || (st && st.code !== 0 ? st.message : '');
      lap('execute');
    }
    const [stdout, stderr] = await Promise.all([
      result.stdout_raw?.length ? Buffer.from(result.stdout_raw) : readBlob(c, result.stdout_digest),
      result.stderr_raw?.length ? Buffer.from(result.stderr_raw) : readBlob(c, result.stderr_digest),
    ]);
    await writeOutDir(c, result, prepared.outDir, prepared.pathMap);
    let err = mapBack(stderr, prepared.pathMap);
    if (warning && !err.includes(Buffer.from(warning))) err = Buffer.concat([err, message(prepared.crate, warning)]);
    lap('fetch');
    const out: BuildScriptResult = { exitCode: result.exit_code, stdout: mapBack(stdout, prepared.pathMap), stderr: err, crate: prepared.crate, source, actionDigest: prepared.actionDigest, timings };
    if (warning) out.warning = warning;
    return out;
  } catch (e) {
    const err = e as Error & { code?: number; details?: string };
    const text = err.code !== undefined ? explainStatus(err.code, err.details ?? err.message) : err.message;
    return { exitCode: 1, stdout: Buffer.alloc(0), stderr: message(prepared.crate, `cannot run it on the fleet at ${ctx.endpoint}: ${text}`), crate: prepared.crate, source: 'error', actionDigest: prepared.actionDigest };
  }
}

function explainStatus(code: number, text: string): string {
  if (code === 9 && text.includes(RUSTC_RELEASE_PROPERTY)) {
    return `${text} (no worker has the rustc release this build uses: install that toolchain on the workers (rustup toolchain install, or worker.buildScripts.toolchains) or build with one they have)`;
  }
  if (code === 9 && text.includes(BUILD_SCRIPT_PROPERTY)) return `${text} (no worker runs Cargo build scripts: workers need bubblewrap and root)`;
  if (code === 14) return `${text} (is reapi running there?)`;
  return text;
}

/** A fresh id for one cargo invocation. */
export const newInvocationId = (): string => randomUUID();
