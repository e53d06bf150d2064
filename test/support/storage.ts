// A storage node on free ports with a temp data dir, plus typed gRPC clients and promise helpers
// for integration tests that talk to it over real gRPC.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startStorageNode, type StorageNode } from '../../cas/storage-node.ts';
import { mergeConfig, parseConfig, type Config, type ConfigInput } from '../../common/config.ts';
import { silentLogger, type Logger } from '../../common/logger.ts';
import {
  services,
  type ActionCacheClient,
  type ByteStreamClient,
  type CapabilitiesClient,
  type ContentAddressableStorageClient,
  type MessageInput,
  type MessageOutput,
} from '../../protos/index.ts';

export interface TestStorage {
  node: StorageNode;
  config: Config;
  dataDir: string;
  /** host:port of the gRPC server. */
  address: string;
  /** http://host:port of /metrics and /healthz. */
  httpUrl: string;
  capabilities: CapabilitiesClient;
  cas: ContentAddressableStorageClient;
  byteStream: ByteStreamClient;
  actionCache: ActionCacheClient;
  /** Close the clients and the node; removes the data dir unless it was given or `keepDataDir`. */
  stop(opts?: { keepDataDir?: boolean }): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /**
   * Remove the data dir on stop(). Defaults to true for a temp dir made here and false when
   * `overrides.dataDir` names one (the caller owns it).
   */
  removeDataDir?: boolean;
}

const CLIENT_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
};

/** Start a storage node (disk backend unless overridden) on 127.0.0.1 with free ports. */
export async function startTestStorage(overrides: ConfigInput = {}, opts: StartOptions = {}): Promise<TestStorage> {
  const givenDir = overrides.dataDir;
  const dataDir = givenDir ?? (await mkdtemp(join(tmpdir(), 'reapi-storage-')));
  const removeDataDir = opts.removeDataDir ?? givenDir === undefined;
  let node: StorageNode;
  let config: Config;
  try {
    config = parseConfig(
      mergeConfig(
        { port: 0, httpPort: 0, listen: '127.0.0.1', logLevel: 'silent', storage: { backend: 'disk' } },
        overrides as Record<string, unknown>,
        { dataDir },
      ),
      'test storage config',
    );
    node = await startStorageNode(config, opts.logger ?? silentLogger);
  } catch (err) {
    if (removeDataDir) await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  const address = `127.0.0.1:${node.grpcPort}`;
  const creds = grpc.credentials.createInsecure();
  const capabilities = new services.Capabilities(address, creds, CLIENT_OPTIONS);
  const cas = new services.ContentAddressableStorage(address, creds, CLIENT_OPTIONS);
  const byteStream = new services.ByteStream(address, creds, CLIENT_OPTIONS);
  const actionCache = new services.ActionCache(address, creds, CLIENT_OPTIONS);
  let stopped: Promise<void> | undefined;
  return {
    node,
    config,
    dataDir,
    address,
    httpUrl: `http://127.0.0.1:${node.httpPort}`,
    capabilities,
    cas,
    byteStream,
    actionCache,
    stop(stopOpts = {}) {
      stopped ??= (async () => {
        for (const c of [capabilities, cas, byteStream, actionCache]) c.close();
        await node.close();
        if (removeDataDir && !stopOpts.keepDataDir) await rm(dataDir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}

// ---------------------------------------------------------------------------
// Calls

/**
 * Promise form of a unary call: `await unary(s.cas, s.cas.FindMissingBlobs, { blob_digests })`.
 * Rejects with the grpc.ServiceError.
 */
export function unary<C extends grpc.Client, Req, Res>(
  client: C,
  method: (this: C, request: Req, callback: grpc.requestCallback<Res>) => grpc.ClientUnaryCall,
  request: Req,
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    method.call(client, request, (err, res) => {
      if (err) reject(err);
      else if (res === undefined) reject(new Error('unary call ended without a response'));
      else resolve(res);
    });
  });
}

/** Every message of a server stream; rejects with the stream's error. */
export async function collect<T>(stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const msg of stream as AsyncIterable<T>) out.push(msg);
  return out;
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number';
}

/** Assert that `p` rejects with a gRPC status `code` (and a message matching `message`). */
export async function expectGrpcError(p: Promise<unknown>, code: grpc.status, message?: RegExp): Promise<grpc.ServiceError> {
  let caught: grpc.ServiceError | undefined;
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isServiceError(err), `expected a gRPC error, got ${String(err)}`);
    assert.equal(
      err.code,
      code,
      `expected ${grpc.status[code]}, got ${grpc.status[err.code] ?? err.code}: ${err.details}`,
    );
    if (message) assert.match(err.details, message);
    caught = err;
    return true;
  });
  return caught!;
}

// ---------------------------------------------------------------------------
// ByteStream

type WriteResponse = MessageOutput<'WriteResponse'>;
type WriteRequest = MessageInput<'WriteRequest'>;

/** Bazel's ByteStream chunk size. */
export const BAZEL_CHUNK = 16 * 1024;

export interface WriteOptions {
  /** Bytes per WriteRequest (default 16 KiB, like Bazel). */
  chunkSize?: number;
  /** Set finish_write on the last request (default true). */
  finish?: boolean;
  /** write_offset of the first request (default 0). */
  offset?: number;
}

/** ByteStream.Write of `data` to `resourceName` in chunks; resolves with the WriteResponse. */
export function byteStreamWrite(
  bs: ByteStreamClient,
  resourceName: string,
  data: Buffer,
  opts: WriteOptions = {},
): Promise<WriteResponse> {
  const size = opts.chunkSize ?? BAZEL_CHUNK;
  function* chunks(): Generator<Buffer> {
    for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
  }
  return byteStreamWriteChunks(bs, resourceName, chunks(), { finish: opts.finish, offset: opts.offset });
}

/**
 * ByteStream.Write of a sequence of chunks (each one WriteRequest), honouring flow control. Stops
 * sending when the server answers early (blob already present, or an error).
 */
export async function byteStreamWriteChunks(
  bs: ByteStreamClient,
  resourceName: string,
  chunks: Iterable<Buffer> | AsyncIterable<Buffer>,
  opts: { finish?: boolean; offset?: number } = {},
): Promise<WriteResponse> {
  const finish = opts.finish ?? true;
  let offset = opts.offset ?? 0;
  let settled = false;
  let onSettled: () => void = () => {};
  const settledSignal = new Promise<void>((r) => (onSettled = r));
  // Assigned synchronously by the Promise executor below.
  let call!: grpc.ClientWritableStream<WriteRequest>;
  const done = new Promise<WriteResponse>((resolve, reject) => {
    call = bs.Write((err, res) => {
      settled = true;
      onSettled();
      if (err) reject(err);
      else if (res === undefined) reject(new Error('Write ended without a response'));
      else resolve(res);
    });
  });
  let first = true;
  const send = async (data: Buffer, last: boolean): Promise<void> => {
    if (settled) return;
    const req: WriteRequest = { write_offset: offset, data, finish_write: last && finish };
    if (first) req.resource_name = resourceName;
    first = false;
    offset += data.length;
    if (!call.write(req)) {
      let onDrain: () => void = () => {};
      const drained = new Promise<void>((r) => (onDrain = r));
      call.once('drain', onDrain);
      await Promise.race([drained, settledSignal]);
      call.removeListener('drain', onDrain);
    }
  };
  let pending: Buffer | undefined;
  try {
    for await (const chunk of chunks) {
      if (settled) break;
      if (pending) await send(pending, false);
      pending = chunk;
    }
    if (!settled) {
      await send(pending ?? Buffer.alloc(0), true);
      call.end();
    }
  } catch (err) {
    done.catch(() => {});
    call.cancel();
    throw err;
  }
  return done;
}

export interface ReadOptions {
  offset?: number;
  limit?: number;
}

/** ByteStream.Read of a whole resource into one Buffer. */
export async function byteStreamRead(bs: ByteStreamClient, resourceName: string, opts: ReadOptions = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  await byteStreamReadEach(bs, resourceName, (data) => parts.push(data), opts);
  return Buffer.concat(parts);
}

/** ByteStream.Read, handing each chunk to `onData` without keeping it; resolves with the byte count. */
export async function byteStreamReadEach(
  bs: ByteStreamClient,
  resourceName: string,
  onData: (data: Buffer) => void,
  opts: ReadOptions = {},
): Promise<number> {
  const stream = bs.Read({ resource_name: resourceName, read_offset: opts.offset ?? 0, read_limit: opts.limit ?? 0 });
  let n = 0;
  for await (const msg of stream as AsyncIterable<MessageOutput<'ReadResponse'>>) {
    n += msg.data.length;
    onData(msg.data);
  }
  return n;
}

/** The samples of /metrics named `name` whose labels include every one of `labels`, summed. */
export async function metricValue(t: TestStorage, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await fetch(`${t.httpUrl}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([^ ]+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(l[1]!, l[2]!);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum += Number(m[3]);
  }
  return sum;
}
