// Service-edge helpers: promise-based handlers become grpc-js handlers that turn errors into a
// status with a message, log what was wrong, and count calls and their duration.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { decode } from '../protos/index.ts';
import { ReapiError, statusName, toStatus, toServiceError } from './errors.ts';
import type { CallGuard } from './auth/guard.ts';

export interface ServiceContext {
  service: string;
  metrics: Metrics;
  logger: Logger;
  /** Who may call (common/auth/guard.ts); every call is admitted through it first. */
  guard: CallGuard;
}

/** Admit the call through the service's guard. */
function admitted(ctx: ServiceContext, method: string, call: { metadata: grpc.Metadata }, request?: unknown): Promise<unknown> {
  return ctx.guard.admit(ctx.service, method, call, request);
}

export type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>;

/**
 * An implementation object may carry replacements for parts of its service definition under this
 * key, e.g. a hand-written serializer for a hot message; startGrpcServer applies them.
 */
export const METHOD_OVERRIDES: unique symbol = Symbol('reapi.grpc.methodOverrides');

export type MethodOverrides = Record<string, Partial<grpc.MethodDefinition<unknown, unknown>>>;

/** `definition` with the overrides its implementation carries (see METHOD_OVERRIDES), if any. */
export function applyMethodOverrides(definition: grpc.ServiceDefinition, impl: object): grpc.ServiceDefinition {
  const overrides = (impl as { [METHOD_OVERRIDES]?: MethodOverrides })[METHOD_OVERRIDES];
  if (!overrides) return definition;
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = { ...definition };
  for (const [method, parts] of Object.entries(overrides)) {
    const original = out[method];
    if (!original) throw new Error(`method override for ${method}, which the service does not have`);
    out[method] = { ...original, ...parts };
  }
  return out as grpc.ServiceDefinition;
}

/**
 * Let grpc-js queue at most `messages` requests of a client-streaming call ahead of the handler
 * (its default is 16). Queued megabyte messages are live ArrayBuffer memory, which V8 counts
 * towards starting a full collection: with 16 of them queued a 256 MiB upload ran 9 full GCs,
 * with 2 it ran 2. Past the queue, HTTP/2 flow control holds the client. (Node has no public
 * setter for an existing stream's high-water mark; without the internal field this does nothing,
 * which only costs speed.)
 */
export function limitReadAhead(call: NodeJS.ReadableStream, messages: number): void {
  const state = (call as { _readableState?: { highWaterMark?: unknown } })._readableState;
  if (state && typeof state.highWaterMark === 'number') state.highWaterMark = messages;
}

/** Time one call and record its outcome; returns the function that ends it. */
export function beginCall(ctx: ServiceContext, method: string, call: { getPeer(): string; metadata: grpc.Metadata }) {
  const stopTimer = ctx.metrics.grpcDuration.startTimer({ service: ctx.service, method });
  return (err: unknown) => {
    stopTimer();
    if (err === undefined || err === null) {
      ctx.metrics.grpcRequests.inc({ service: ctx.service, method, code: 'OK' });
      return;
    }
    const { code, message } = toStatus(err);
    ctx.metrics.grpcRequests.inc({ service: ctx.service, method, code: statusName(code) });
    const fields = { method: `${ctx.service}.${method}`, code: statusName(code), peer: call.getPeer(), ...requestLabels(call.metadata) };
    if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN || code === grpc.status.DATA_LOSS) {
      ctx.logger.error({ ...fields, err }, message);
    } else if (code === grpc.status.NOT_FOUND || code === grpc.status.CANCELLED) {
      ctx.logger.debug(fields, message);
    } else {
      ctx.logger.warn(fields, message);
    }
  };
}

export function unary<Req, Res>(
  ctx: ServiceContext,
  method: string,
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => answer(beginCall(ctx, method, call), admitted(ctx, method, call, call.request).then(() => fn(call.request, call)), callback);
}

/** A client-streaming handler: `fn` reads the call and resolves with the one response. */
export function clientStream<Req, Res>(
  ctx: ServiceContext,
  method: string,
  fn: (call: grpc.ServerReadableStream<Req, Res>) => Promise<Res>,
): grpc.handleClientStreamingCall<Req, Res> {
  return (call, callback) => answer(beginCall(ctx, method, call), admitted(ctx, method, call).then(() => fn(call)), callback);
}

/** Hand a call's one response (or its error, as a status) to gRPC, and close its accounting. */
function answer<Res>(end: (err: unknown) => void, response: Promise<Res>, callback: grpc.sendUnaryData<Res>): void {
  response.then(
    (res) => {
      end(undefined);
      callback(null, res);
    },
    (err: unknown) => {
      end(err);
      callback(toServiceError(err));
    },
  );
}

export const REQUEST_METADATA_KEY = 'build.bazel.remote.execution.v2.requestmetadata-bin';

export interface RequestLabels {
  toolInvocationId?: string;
  mnemonic?: string;
  target?: string;
  tool?: string;
}

/** What Bazel and Buck2 say about a call (RequestMetadata), for logs and reports. */
export function requestLabels(metadata: grpc.Metadata): RequestLabels {
  const raw = metadata.get(REQUEST_METADATA_KEY)[0];
  if (!raw) return {};
  try {
    const m = decode('RequestMetadata', Buffer.isBuffer(raw) ? raw : Buffer.from(raw));
    const labels: RequestLabels = {};
    if (m.tool_invocation_id) labels.toolInvocationId = m.tool_invocation_id;
    if (m.action_mnemonic) labels.mnemonic = m.action_mnemonic;
    if (m.target_id) labels.target = m.target_id;
    if (m.tool_details?.tool_name) labels.tool = `${m.tool_details.tool_name} ${m.tool_details.tool_version}`.trim();
    return labels;
  } catch {
    return {};
  }
}

/**
 * A server-streaming handler: `fn` sends messages through `send`, which waits while the client is
 * slow (backpressure) and rejects once the client has gone away.
 */
export function serverStream<Req, Res>(
  ctx: ServiceContext,
  method: string,
  fn: (req: Req, send: (msg: Res) => Promise<void>, call: grpc.ServerWritableStream<Req, Res>) => Promise<void>,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    const end = beginCall(ctx, method, call);
    let cancelled = false;
    call.on('cancelled', () => {
      cancelled = true;
    });
    const send = (msg: Res): Promise<void> => {
      if (cancelled) return Promise.reject(new ReapiError(grpc.status.CANCELLED, 'the client cancelled the call'));
      if (call.write(msg)) return Promise.resolve();
      // A cancelled call never drains: stop waiting then, or the handler (and its open file) hangs.
      return new Promise((resolve, reject) => {
        const onDrain = () => {
          call.removeListener('cancelled', onCancel);
          resolve();
        };
        const onCancel = () => {
          call.removeListener('drain', onDrain);
          reject(new ReapiError(grpc.status.CANCELLED, 'the client cancelled the call'));
        };
        call.once('drain', onDrain);
        call.once('cancelled', onCancel);
      });
    };
    admitted(ctx, method, call, call.request).then(() => fn(call.request, send, call)).then(
      () => {
        end(undefined);
        call.end();
      },
      (err: unknown) => {
        end(err);
        if (!cancelled) call.emit('error', toServiceError(err));
      },
    );
  };
}
