// The persistent expander: one long-lived local process that the proc-macro shim (guest/shim)
// talks to over a Unix socket for every macro invocation of a rustc run, instead of starting a
// `reapi expand` process each time. Each expansion is looked up, in order:
//   1. in memory (the same module and tokens expanded before in this process): microseconds;
//   2. in the fleet's ActionCache, under the very key `reapi expand` and the workers use
//      (clients/expand-client.ts prepareExpansion), the expansion inlined: one round trip,
//      raced against
//   3. expanding it here, in the wasm thread pool the workers use (execution/wasm/), so the result
//      is byte-identical to theirs: whichever answers first is the answer (a small macro expands
//      here faster than a round trip; a heavy one comes faster from the cache). What was expanded
//      here and not found in the cache is offered to the ActionCache in the background (the
//      server's write policy decides; a refusal costs nothing).
//
// Wire format, one request after another on a connection (lengths are decimal byte counts):
//   request:  "expand ENTRY MODULE_PATH_LEN INPUT_LEN ATTR_LEN\n" MODULE_PATH INPUT [ATTR]
//             (ATTR_LEN -1: not an attribute macro)
//   answer:   "ok LEN\n" EXPANSION   or   "error LEN\n" MESSAGE
// A malformed request gets an error answer and the connection is closed; a hostile module (no
// end, memory bomb, broken ABI) gets its error answer and the expander keeps serving.
import { chmod, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Digest } from '../../common/digest.ts';
import { SHA256 } from '../../common/digest-function.ts';
import type { Logger } from '../../common/logger.ts';
import { silentLogger } from '../../common/logger.ts';
import type { InProcessExpander } from '../../execution/wasm/in-process-expander.ts';
import type { ExpansionResult } from '../../execution/wasm/protocol.ts';
import { EXPAND_FILES, prepareExpansion } from '../expand-client.ts';
import { DEFAULT_EXPAND_TIMEOUT_SECONDS } from '../expand-defaults.ts';
import { lookupActionResult, outputFile, uploadMissing, type ExecClients } from '../remote-execution.ts';
import { unary } from '../grpc-calls.ts';

export interface ExpanderOptions {
  socket: string;
  expander: InProcessExpander;
  /** The fleet whose ActionCache expansions are shared through; none: this process alone. */
  clients?: ExecClients;
  /** Platform of the expansion actions (as `reapi expand --isa`). */
  platform?: Record<string, string>;
  timeoutSeconds?: number;
  /** Bytes of expansions kept in memory. */
  memoryCacheBytes?: number;
  logger?: Logger;
}

export interface ExpanderStats {
  requests: number;
  memoryHits: number;
  cacheHits: number;
  expanded: number;
  failed: number;
}

export interface RunningExpander {
  socket: string;
  stats: ExpanderStats;
  close(): Promise<void>;
}

/** Longest header line, and largest module path / token text accepted. */
const MAX_HEADER = 4096;
const MAX_TOKENS_BYTES = 64 * 1024 * 1024;

type Request = { entry: string; modulePath: string; input: Buffer; attr?: Buffer };

/** Parses requests out of a connection's bytes as they arrive. */
class RequestReader {
  private buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
  }
  /** The next complete request, undefined when more bytes are needed; throws on a malformed one. */
  next(): Request | undefined {
    const nl = this.buf.indexOf(0x0a);
    if (nl < 0) {
      if (this.buf.length > MAX_HEADER) throw new Error('request header too long');
      return undefined;
    }
    const m = /^expand (\S+) (\d+) (\d+) (-1|\d+)$/.exec(this.buf.subarray(0, nl).toString('utf8'));
    if (!m) throw new Error('malformed request (expected "expand ENTRY MODULE_PATH_LEN INPUT_LEN ATTR_LEN")');
    const [pathLen, inputLen, attrLen] = [Number(m[2]), Number(m[3]), Number(m[4])];
    if (pathLen > MAX_HEADER || inputLen > MAX_TOKENS_BYTES || attrLen > MAX_TOKENS_BYTES) throw new Error('request too large');
    const total = nl + 1 + pathLen + inputLen + Math.max(0, attrLen);
    if (this.buf.length < total) return undefined;
    let at = nl + 1;
    const take = (n: number) => this.buf.subarray(at, (at += n));
    const req: Request = { entry: m[1]!, modulePath: take(pathLen).toString('utf8'), input: Buffer.from(take(inputLen)) };
    if (attrLen >= 0) req.attr = Buffer.from(take(attrLen));
    this.buf = this.buf.subarray(total);
    return req;
  }
}

function answer(conn: Socket, kind: 'ok' | 'error', body: Buffer | string): void {
  const data = typeof body === 'string' ? Buffer.from(body) : body;
  conn.write(Buffer.concat([Buffer.from(`${kind} ${data.length}\n`), data]));
}

function failureText(r: Exclude<ExpansionResult, { ok: true }>, entry: string): string {
  switch (r.kind) {
    case 'panic':
      return `the macro panicked: ${r.message} (${entry})`;
    case 'memory-limit':
      return `the macro hit its memory cap: ${r.message} (${entry})`;
    case 'bad-module':
      return `module rejected: ${r.message}`;
    default:
      return `${r.message} (${entry})`;
  }
}

export async function startExpander(opts: ExpanderOptions): Promise<RunningExpander> {
  const log = opts.logger ?? silentLogger;
  const timeoutMs = (opts.timeoutSeconds ?? DEFAULT_EXPAND_TIMEOUT_SECONDS) * 1000;
  const stats: ExpanderStats = { requests: 0, memoryHits: 0, cacheHits: 0, expanded: 0, failed: 0 };
  const memory = new LRUCache<string, Buffer>({ maxSize: opts.memoryCacheBytes ?? 256 * 1024 * 1024, sizeCalculation: (b) => Math.max(1, b.length) });
  /** Module bytes (and their digest, hashed once) by path, while the file is unchanged. */
  const modules = new Map<string, { key: string; bytes: Buffer; digest: Digest }>();
  const writes = new Set<Promise<unknown>>();

  const moduleAt = async (path: string): Promise<{ bytes: Buffer; digest: Digest }> => {
    const st = await stat(path);
    const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
    const known = modules.get(path);
    if (known?.key === key) return known;
    const bytes = await readFile(path);
    const entry = { key, bytes, digest: SHA256.digestOf(bytes) };
    modules.set(path, entry);
    if (modules.size > 64) modules.delete(modules.keys().next().value!);
    return entry;
  };

  /** Offer an expansion made here to the fleet's ActionCache (in the background; failures are fine). */
  const share = (c: ExecClients, prepared: ReturnType<typeof prepareExpansion>, output: Buffer): void => {
    const p = (async () => {
      const digest = c.digestFunction.digestOf(output);
      const blobs = new Map(prepared.blobs);
      if (output.length) blobs.set(digest.hash, output);
      await uploadMissing(c, blobs);
      await unary(c.actionCache, c.actionCache.UpdateActionResult, {
        instance_name: c.instance,
        action_digest: prepared.actionDigest,
        action_result: { exit_code: 0, output_files: [{ path: EXPAND_FILES.output, digest }] },
      });
    })()
      .catch((err: unknown) => log.debug({ err }, 'expansion not shared through the ActionCache'))
      .finally(() => writes.delete(p));
    writes.add(p);
  };

  const handle = async (req: Request): Promise<{ ok: true; output: Buffer } | { ok: false; message: string }> => {
    stats.requests++;
    let module: { bytes: Buffer; digest: Digest };
    try {
      module = await moduleAt(req.modulePath);
    } catch (err) {
      stats.failed++;
      return { ok: false, message: `cannot read the module ${req.modulePath}: ${(err as Error).message}` };
    }
    const prepared = prepareExpansion({
      module: module.bytes,
      moduleDigest: module.digest,
      entry: req.entry,
      input: req.input,
      ...(req.attr ? { attr: req.attr } : {}),
      platform: opts.platform ?? {},
    });
    const key = prepared.actionDigest.hash;
    const remembered = memory.get(key);
    if (remembered) {
      stats.memoryHits++;
      return { ok: true, output: remembered };
    }
    const c = opts.clients;
    const local = opts.expander.expand(
      { module: module.bytes, entry: req.entry, input: req.input.toString('utf8'), ...(req.attr ? { attr: req.attr.toString('utf8') } : {}) },
      timeoutMs,
    );
    const cached = c ? cachedExpansion(c, prepared.actionDigest) : Promise.resolve(undefined);
    // The first usable answer wins; a cache miss (or failure) leaves it to the local expansion.
    type First = { from: 'local'; r: ExpansionResult } | { from: 'cache'; o: Buffer };
    const fromLocal = local.then((r): First => ({ from: 'local', r }));
    const fromCache = cached.then((o): First | Promise<First> => (o ? { from: 'cache', o } : fromLocal));
    const first: First = await Promise.race([fromLocal, fromCache]);
    if (first.from === 'cache') {
      stats.cacheHits++;
      memory.set(key, first.o);
      return { ok: true, output: first.o };
    }
    const result = first.r;
    if (!result.ok) {
      stats.failed++;
      return { ok: false, message: failureText(result, req.entry) };
    }
    stats.expanded++;
    const output = Buffer.from(result.output);
    memory.set(key, output);
    // Shared only when the cache does not have it already.
    if (c) void cached.then((o) => (o ? undefined : share(c, prepared, output)));
    return { ok: true, output };
  };

  /** The expansion as the ActionCache has it, or undefined (a miss, or no answer). */
  const cachedExpansion = async (c: ExecClients, actionDigest: Digest): Promise<Buffer | undefined> => {
    try {
      const hit = await lookupActionResult(c, actionDigest, { inlineOutputFiles: [EXPAND_FILES.output] });
      return hit && hit.exit_code === 0 ? (await outputFile(c, hit, EXPAND_FILES.output))?.data : undefined;
    } catch (err) {
      log.debug({ err }, 'ActionCache lookup failed; expanding here');
      return undefined;
    }
  };

  await rm(opts.socket, { force: true });
  const connections = new Set<Socket>();
  const server: Server = createServer((conn) => {
    connections.add(conn);
    conn.on('close', () => connections.delete(conn));
    const reader = new RequestReader();
    let chain = Promise.resolve();
    conn.on('error', () => {});
    conn.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      let req: Request | undefined;
      try {
        while ((req = reader.next())) {
          const r = req;
          chain = chain.then(async () => {
            const res = await handle(r).catch((err: unknown) => ({ ok: false as const, message: `expander: ${(err as Error).message}` }));
            if (res.ok) answer(conn, 'ok', res.output);
            else answer(conn, 'error', res.message);
          });
        }
      } catch (err) {
        chain = chain.then(() => {
          answer(conn, 'error', `expander: ${(err as Error).message}`);
          conn.end();
        });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.socket, () => resolve());
  });
  // Only this user may ask: the expansions are theirs.
  await chmod(opts.socket, 0o600);
  log.info({ socket: opts.socket, shared: opts.clients !== undefined }, 'expander listening');
  return {
    socket: opts.socket,
    stats,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const conn of connections) conn.destroy();
      await closed;
      await Promise.allSettled([...writes]);
      await rm(opts.socket, { force: true });
    },
  };
}
