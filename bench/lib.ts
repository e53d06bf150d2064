// Shared helpers for the benchmarks: a `reapi serve` child process (so client and server CPU and
// memory are measured apart), timing of phases with both sides' CPU, synthetic data, gRPC
// promise wrappers, percentiles, and printing/saving results.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const RESULTS_DIR = join(REPO_ROOT, 'bench', 'results');

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Time, CPU and memory

export function now(): number {
  return performance.now() / 1000;
}

/** Megabytes (10^6 bytes) per second. */
export function mbps(bytes: number, seconds: number): number {
  return bytes / 1e6 / seconds;
}

/** p in [0, 100]; nearest-rank on a copy, so callers need not sort. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

const CLK_TCK = 100; // USER_HZ is 100 on every Linux we run on (getconf CLK_TCK).

export interface ProcMemory {
  /** Current resident set (VmRSS). */
  rssBytes: number;
  /** Peak resident set since start (VmHWM). */
  hwmBytes: number;
}

/** VmRSS and VmHWM of a process from /proc (Linux only). */
export function procMemory(pid: number): ProcMemory {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  return { rssBytes: kib('VmRSS'), hwmBytes: kib('VmHWM') };
}

/** User + system CPU seconds a process has used (Linux only). */
export function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces; fields after its closing paren are fixed.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime: fields 14, 15
}

/**
 * User + system CPU seconds of a process plus its waited-for children (cutime, cstime): for a
 * server that spawns sandboxes, the CPU of the actions it ran as well as its own (Linux only).
 */
export function procCpuSecondsWithChildren(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLK_TCK; // fields 14-17
}

export function clientCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Samples a process's RSS every `intervalMs` until stopped; gives the peak seen. */
export class RssSampler {
  private peak = 0;
  private readonly timer: NodeJS.Timeout;
  constructor(
    private readonly pid: number,
    intervalMs = 50,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }
  private sample(): void {
    try {
      this.peak = Math.max(this.peak, procMemory(this.pid).rssBytes);
    } catch {
      // the process is gone
    }
  }
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak;
  }
}

export interface PhaseResult<T> {
  value: T;
  seconds: number;
  /** CPU seconds this (client) process used during the phase. */
  clientCpu: number;
  /** CPU seconds the server used during the phase (when a server pid was given). */
  serverCpu?: number;
  /** Peak server RSS sampled during the phase. */
  serverPeakRss?: number;
}

/** Run `fn`, timing it and measuring client CPU, and server CPU and RSS when `serverPid` is set. */
export async function phase<T>(fn: () => Promise<T>, serverPid?: number): Promise<PhaseResult<T>> {
  const sampler = serverPid === undefined ? undefined : new RssSampler(serverPid);
  const serverCpu0 = serverPid === undefined ? 0 : procCpuSeconds(serverPid);
  const cpu0 = clientCpuSeconds();
  const t0 = now();
  const value = await fn();
  const seconds = now() - t0;
  const clientCpu = clientCpuSeconds() - cpu0;
  const result: PhaseResult<T> = { value, seconds, clientCpu };
  if (serverPid !== undefined) {
    result.serverCpu = procCpuSeconds(serverPid) - serverCpu0;
    result.serverPeakRss = sampler!.stop();
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Scratch space

/** Free bytes on the filesystem holding `dir`. */
export async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** A fresh directory under the OS temp dir; fails early when the disk has less than `needBytes` free. */
export async function scratchDir(prefix: string, needBytes: number): Promise<string> {
  const free = await freeBytes(tmpdir());
  if (free < needBytes) {
    throw new Error(`${tmpdir()} has ${fmtBytes(free)} free; this benchmark needs about ${fmtBytes(needBytes)}`);
  }
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Synthetic data: a random block reused with a counter stamped into each chunk, so every chunk
// differs (the hash is real work and blobs do not dedupe) without generating gigabytes of
// randomness.

export class ChunkSource {
  readonly block: Buffer;
  constructor(
    readonly chunkSize: number,
    seed = 1,
  ) {
    this.block = pseudoRandomBytes(chunkSize, seed);
  }

  /** Chunk `i` written into `out` (reused by the caller when it consumes chunks synchronously). */
  fill(i: number, out: Buffer = Buffer.allocUnsafe(this.chunkSize)): Buffer {
    this.block.copy(out, 0);
    out.writeUInt32LE(i >>> 0, 0);
    out.writeUInt32LE(Math.floor(i / 2 ** 32), 4);
    return out;
  }

  /** A fresh buffer holding chunk `i` (for consumers that keep the buffer, e.g. gRPC writes). */
  chunk(i: number): Buffer {
    return this.fill(i, Buffer.allocUnsafe(this.chunkSize));
  }

  /** SHA-256 of `count` chunks, as a blob digest. */
  digest(count: number): { hash: string; size_bytes: number } {
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(this.chunkSize);
    for (let i = 0; i < count; i++) h.update(this.fill(i, buf));
    return { hash: h.digest('hex'), size_bytes: count * this.chunkSize };
  }
}

/** Deterministic pseudo-random bytes (xorshift32), so runs are reproducible. */
export function pseudoRandomBytes(n: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(n + 3);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  return out.subarray(0, n);
}

/** Deterministic PRNG in [0, 1) for sizes and choices. */
export function rng(seed = 42): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// The server under test

export interface ServerHandle {
  pid: number;
  grpcPort: number;
  httpPort: number;
  /** host:port for gRPC clients. */
  address: string;
  child: ChildProcess;
  memory(): ProcMemory;
  cpuSeconds(): number;
  /** The last lines the server wrote to stderr (for error reports). */
  stderrTail(): string;
  /** SIGTERM and wait for exit (the server writes --cpu-prof output then). */
  stop(): Promise<void>;
}

export interface StartServerOptions {
  dataDir: string;
  /** Node flags for the server, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/prof']. */
  nodeArgs?: string[];
  /** Extra `reapi serve` flags. */
  args?: string[];
  logLevel?: string;
  timeoutMs?: number;
  /** The `reapi` entry point; default $BENCH_REAPI_BIN or this checkout's bin/reapi.mjs (set it to compare checkouts). */
  bin?: string;
  /**
   * Run this instead of `reapi serve ...` (after nodeArgs), e.g. ['--import', 'tsx', 'bench/grpc-sink.ts'];
   * it must print the same `listening grpc=N http=M` line. dataDir and logLevel are then unused.
   */
  command?: string[];
}

/** `node bin/reapi.mjs serve` on free ports; resolves once it printed its listening line. */
export async function startServer(opts: StartServerOptions): Promise<ServerHandle> {
  const argv = [
    ...(opts.nodeArgs ?? []),
    ...(opts.command ?? [
      opts.bin || process.env.BENCH_REAPI_BIN || join(REPO_ROOT, 'bin', 'reapi.mjs'),
      'serve',
      '--listen', '127.0.0.1',
      '--port', '0',
      '--http-port', '0',
      '--data-dir', opts.dataDir,
      '--log-level', opts.logLevel ?? 'warn',
      ...(opts.args ?? []),
    ]),
  ];
  const child = spawn(process.execPath, argv, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    stderr = (stderr + s).slice(-8000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let startup = () => {};
  let stopping = false;

  const ports = await new Promise<{ grpc: number; http: number }>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`server did not start within ${opts.timeoutMs ?? 30000} ms`)), opts.timeoutMs ?? 30000);
    function fail(err: Error) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${err.message}\n--- server stderr ---\n${stderr}`));
    }
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      out += s;
      const m = /reapi \S+ listening grpc=(\d+) http=(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ grpc: Number(m[1]), http: Number(m[2]) });
      }
    });
    const early = (code: number | null, signal: string | null) => fail(new Error(`server exited early (code ${code}, signal ${signal})`));
    child.once('error', fail);
    child.once('exit', early);
    startup = () => {
      child.removeListener('error', fail);
      child.removeListener('exit', early);
    };
  });
  startup();
  child.on('exit', (code, signal) => {
    if (!stopping) log(`server exited unexpectedly (code ${code}, signal ${signal})\n--- server stderr ---\n${stderr}`);
  });
  child.stdout!.resume();
  const pid = child.pid!;
  return {
    pid,
    grpcPort: ports.grpc,
    httpPort: ports.http,
    address: `127.0.0.1:${ports.grpc}`,
    child,
    memory: () => procMemory(pid),
    cpuSeconds: () => procCpuSeconds(pid),
    stderrTail: () => stderr,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      stopping = true;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Numeric samples from a Prometheus /metrics endpoint (labels kept in the key), e.g. the server's heap. */
export async function scrapeMetrics(httpPort: number, prefix = ''): Promise<Record<string, number>> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
  const out: Record<string, number> = {};
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#') || !line.startsWith(prefix)) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// gRPC clients

/**
 * Client options: large messages both ways (batches near max_batch_total_size_bytes), and an 8 MiB
 * HTTP/2 receive window, about where grpc-java (Bazel) ends up with its BDP auto-tuning; grpc-js's
 * default 64 KiB window would make the client, not the server, limit ByteStream.Read.
 */
export const CLIENT_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 256 * MiB,
  'grpc.max_send_message_length': 256 * MiB,
  'grpc-node.flow_control_window': 8 * MiB,
};

export function insecure(): grpc.ChannelCredentials {
  return grpc.credentials.createInsecure();
}

/** The last (and so inferred) overload of a generated unary method: (argument, callback). */
type UnaryMethod<Req, Res> = (req: Req, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;
type UnaryWithOptions<Req, Res> = (req: Req, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;

/** Promise form of a unary call with a deadline: `await unaryCall(client.FindMissingBlobs.bind(client), req)`. */
export function unaryCall<Req, Res>(method: UnaryMethod<Req, Res>, req: Req, deadlineMs = 120_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    // Every generated method also takes (argument, options, callback).
    (method as unknown as UnaryWithOptions<Req, Res>)(req, { deadline: Date.now() + deadlineMs }, (err, res) =>
      err ? reject(err) : resolve(res as Res),
    );
  });
}

/** Run `fn` over `items` with at most `limit` in flight; results in input order. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reporting

export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (n >= KiB) return `${(n / KiB).toFixed(1)} KiB`;
  return `${n} B`;
}

export function fmtNum(n: number | undefined, digits = 1): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export type Verdict = 'PASS' | 'MISS';

export interface Target {
  /** Human form, e.g. ">= 0.5x" or "< 50 ms". */
  text: string;
  verdict: Verdict;
}

export function atLeast(value: number, min: number, text: string): Target {
  return { text, verdict: value >= min ? 'PASS' : 'MISS' };
}

export function below(value: number, max: number, text: string): Target {
  return { text, verdict: value < max ? 'PASS' : 'MISS' };
}

export interface Row {
  name: string;
  value: string;
  /** e.g. "0.42x sha256" */
  ratio?: string;
  /** Extra detail: CPU, time, counts. */
  note?: string;
  target?: Target;
}

/** A plain-text table; a row with only a name is a section heading. */
export function renderTable(title: string, rows: Row[]): string {
  const head = ['', 'value', 'ratio', 'target', '', 'notes'];
  const cells = rows.map((r) =>
    r.value === '' && !r.ratio && !r.target ? [r.name] : [r.name, r.value, r.ratio ?? '', r.target?.text ?? '', r.target?.verdict ?? '', r.note ?? ''],
  );
  const widths = head.map((h, i) => Math.max(h.length, ...cells.filter((c) => c.length > 1).map((c) => (c[i] ?? '').length)));
  const line = (c: string[]) =>
    c
      .map((s, i) => (i === 1 || i === 2 ? s.padStart(widths[i]!) : s.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const rule = '-'.repeat(widths.reduce((a, b) => a + b + 2, -2));
  const out = [title, rule, line(head), rule];
  for (const c of cells) out.push(c.length === 1 ? `${c[0]}` : line(c));
  out.push(rule);
  // Name each target by its section heading too ("Write" alone is ambiguous).
  let section = '';
  const targets: Array<{ name: string; target: Target }> = [];
  for (const r of rows) {
    if (r.value === '' && !r.ratio && !r.target) section = r.name;
    else if (r.target) targets.push({ name: section ? `${section}: ${r.name.trim()}` : r.name.trim(), target: r.target });
  }
  const missed = targets.filter((t) => t.target.verdict === 'MISS');
  out.push(`${targets.length - missed.length}/${targets.length} targets met`);
  for (const m of missed) out.push(`  MISS ${m.name} (target ${m.target.text})`);
  return out.join('\n');
}

/** Write `data` as bench/results/<name>-<timestamp>.json; returns the path. */
export async function saveResults(name: string, data: unknown): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const stamp = new Date().toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const file = join(RESULTS_DIR, `${name}-${stamp}.json`);
  await writeFile(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

/** Where the benchmark ran, for the results file. */
export function environment(): Record<string, unknown> {
  let cpu = '';
  try {
    cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    // not Linux
  }
  return {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu,
    cpus: availableParallelism(),
    tmpdir: tmpdir(),
    /** 1-minute load average when the run started: other work on the machine skews results. */
    loadavg1: loadavg()[0],
  };
}

export function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}
