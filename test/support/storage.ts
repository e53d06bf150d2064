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
        // A storage node used as a plain remote cache: clients may write its ActionCache.
        { port: 0, httpPort: 0, listen: '127.0.0.1', logLevel: 'silent', storage: { backend: 'disk' }, actionCache: { clientWrites: 'allow' } },
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
// Calls (the promise helpers live with the client library)

export { unary, collect, BAZEL_CHUNK, byteStreamWrite, byteStreamWriteChunks, byteStreamRead, byteStreamReadEach } from '../../clients/grpc-calls.ts';
export type { WriteOptions, ReadOptions } from '../../clients/grpc-calls.ts';

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
