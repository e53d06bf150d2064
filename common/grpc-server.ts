// Starting a gRPC server with the limits every role wants.
import type { Http2Server, ServerHttp2Session } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { applyMethodOverrides } from './grpc.ts';

export interface GrpcServerOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  services: Array<[grpc.ServiceDefinition, grpc.UntypedServiceImplementation]>;
  /** Default: plaintext. `loaded` resolves once TLS files have been read. */
  credentials?: { credentials: grpc.ServerCredentials; loaded: Promise<void> };
}

export async function startGrpcServer(opts: GrpcServerOptions): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': opts.maxMessageBytes,
    'grpc.max_send_message_length': opts.maxMessageBytes,
    // Clients such as Bazel keep connections open for a whole build and ping them.
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  });
  widenFlowControlWindows(server);
  for (const [definition, impl] of opts.services) server.addService(applyMethodOverrides(definition, impl), impl);
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${opts.port}`, opts.credentials?.credentials ?? grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  await opts.credentials?.loaded;
  return { server, port };
}

/**
 * HTTP/2 flow-control windows for what clients send us. Node's default of 64 KiB per stream and
 * per connection lets a client have only 64 KiB in flight, so a large ByteStream.Write waits a
 * WINDOW_UPDATE round trip every 64 KiB. A window only bounds what may be in flight: a paused
 * stream (a slow handler) still stops the client once its window is used up.
 */
const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES = 8 * 1024 * 1024;

/**
 * grpc-js (1.14) reads 'grpc-node.flow_control_window' only on the client side, so the server's
 * windows are set through its http2 server options and on each new session. Both hooks are
 * internal to grpc-js; if they are not there the defaults stay, which is only slower.
 */
function widenFlowControlWindows(server: grpc.Server): void {
  const internals = server as unknown as {
    commonServerOptions?: { settings?: Record<string, unknown> };
    _setupHandlers?: (http2Server: Http2Server, ...rest: unknown[]) => void;
  };
  const common = internals.commonServerOptions;
  const setup = internals._setupHandlers;
  if (!common || typeof common !== 'object' || typeof setup !== 'function') return;
  common.settings = { ...common.settings, initialWindowSize: STREAM_WINDOW_BYTES };
  internals._setupHandlers = function (this: unknown, http2Server: Http2Server, ...rest: unknown[]) {
    http2Server.on('session', (session: ServerHttp2Session) => {
      try {
        session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
      } catch {
        // the session is already gone
      }
    });
    return setup.call(this, http2Server, ...rest);
  };
}

export function stopGrpcServer(server: grpc.Server, graceMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
