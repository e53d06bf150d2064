// gRPC clients of one storage node (`reapi cas`): CAS, ByteStream, ActionCache and Capabilities on
// one shared channel, plus the mapping of a node's gRPC errors to our ReapiError (same status
// code, message prefixed with the node's address so a fleet operator knows which node failed).
import * as grpc from '@grpc/grpc-js';
import { internal, ReapiError } from '../common/errors.ts';
import { parseEndpoint } from '../common/endpoint.ts';
import { FLEET_TOKEN_HEADER } from '../common/auth/authenticator.ts';
import type { Config } from '../common/config.ts';
import { clientToken, grpcChannelCredentials, metadataInterceptor } from '../common/tls.ts';
import {
  decode,
  services,
  type ActionCacheClient,
  type ByteStreamClient,
  type CapabilitiesClient,
  type ContentAddressableStorageClient,
} from '../protos/index.ts';

export interface StorageClientOptions {
  /** Largest gRPC message sent or received (default 64 MiB, as the node's default). */
  maxMessageBytes?: number;
  /** Interval of keepalive pings (default 30 s; the node accepts pings every 10 s or more). */
  keepaliveMs?: number;
  /** Extra or overriding grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
  /** The fleet's shared secret, sent with every call (FLEET_TOKEN_HEADER). */
  fleetToken?: string;
  /** TLS trust and client certificate, and the bearer token to send (`client` of the config). */
  client?: Config['client'];
}

export { FLEET_TOKEN_HEADER };

export interface StorageClients {
  /** The address as given (for messages and logs). */
  readonly address: string;
  /** The gRPC target actually dialled (`host:port`). */
  readonly target: string;
  readonly channel: grpc.Channel;
  readonly cas: ContentAddressableStorageClient;
  readonly byteStream: ByteStreamClient;
  readonly actionCache: ActionCacheClient;
  readonly capabilities: CapabilitiesClient;
  /** Wait until the channel is connected; rejects with UNAVAILABLE after `timeoutMs`. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Close the channel (idempotent); calls in flight fail with CANCELLED/UNAVAILABLE. */
  close(): void;
}

/** A storage node's address (see parseEndpoint). */
export const parseStorageAddress = parseEndpoint;

export function connectStorage(address: string, opts: StorageClientOptions = {}): StorageClients {
  const { target, tls } = parseStorageAddress(address);
  const maxMessageBytes = opts.maxMessageBytes ?? 64 * 1024 * 1024;
  const channelOptions: grpc.ChannelOptions = {
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
    'grpc.keepalive_time_ms': opts.keepaliveMs ?? 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    // A restarted node is found again within a few seconds, not after grpc's 2-minute backoff.
    'grpc.initial_reconnect_backoff_ms': 500,
    'grpc.max_reconnect_backoff_ms': 5_000,
    ...opts.channelOptions,
  };
  const creds = grpcChannelCredentials(tls, opts.client ?? {});
  const headers: Record<string, string> = {};
  if (opts.fleetToken !== undefined) headers[FLEET_TOKEN_HEADER] = opts.fleetToken;
  const token = opts.client ? clientToken(opts.client) : undefined;
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const channel = new grpc.Channel(target, creds, channelOptions);
  const shared = {
    ...channelOptions,
    channelOverride: channel,
    ...(Object.keys(headers).length ? { interceptors: [metadataInterceptor(headers)] } : {}),
  };
  const cas = new services.ContentAddressableStorage(target, creds, shared);
  const byteStream = new services.ByteStream(target, creds, shared);
  const actionCache = new services.ActionCache(target, creds, shared);
  const capabilities = new services.Capabilities(target, creds, shared);
  let closed = false;
  return {
    address,
    target,
    channel,
    cas,
    byteStream,
    actionCache,
    capabilities,
    waitReady: (timeoutMs = 10_000) =>
      new Promise<void>((resolve, reject) => {
        cas.waitForReady(Date.now() + timeoutMs, (err) => {
          if (!err) resolve();
          else reject(new ReapiError(grpc.status.UNAVAILABLE, `storage node ${address}: not reachable within ${timeoutMs} ms (${err.message})`));
        });
      }),
    close: () => {
      if (closed) return;
      closed = true;
      channel.close();
    },
  };
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number' && 'metadata' in err;
}

/**
 * A node's error as a ReapiError: same status code, message prefixed with the node's address,
 * google.rpc.Status details (e.g. PreconditionFailure) kept. ReapiErrors pass through.
 */
export function remoteError(err: unknown, address: string): ReapiError {
  if (err instanceof ReapiError) return err;
  if (isServiceError(err)) {
    const message = `storage node ${address}: ${err.details || err.message}`;
    const raw = err.metadata?.get('grpc-status-details-bin')[0];
    if (raw) {
      try {
        const status = decode('Status', Buffer.isBuffer(raw) ? raw : Buffer.from(raw));
        return new ReapiError(err.code, message, status.details);
      } catch {
        // undecodable details: keep code and message
      }
    }
    return new ReapiError(err.code, message);
  }
  return internal(`storage node ${address}: ${err instanceof Error ? err.message : String(err)}`);
}

/**
 * Start a call; grpc-js throws synchronously when the channel was closed, which becomes
 * UNAVAILABLE naming the node.
 */
export function startCall<T>(address: string, start: () => T): T {
  try {
    return start();
  } catch (err) {
    throw new ReapiError(
      grpc.status.UNAVAILABLE,
      `storage node ${address}: cannot start a call (${err instanceof Error ? err.message : String(err)})`,
    );
  }
}

/**
 * Promise form of a unary call: `unaryCall(addr, (cb) => client.FindMissingBlobs(req, opts, cb))`.
 * Rejects with `remoteError`.
 */
export function unaryCall<T>(address: string, start: (callback: grpc.requestCallback<T>) => unknown): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    startCall(address, () =>
      start((err, res) => {
        if (err) reject(remoteError(err, address));
        else if (res === undefined) reject(internal(`storage node ${address}: the call ended without a response`));
        else resolve(res);
      }),
    );
  });
}
