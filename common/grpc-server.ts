// Starting a gRPC server with the limits every role wants.
import * as grpc from '@grpc/grpc-js';

export interface GrpcServerOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  services: Array<[grpc.ServiceDefinition, grpc.UntypedServiceImplementation]>;
}

export async function startGrpcServer(opts: GrpcServerOptions): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': opts.maxMessageBytes,
    'grpc.max_send_message_length': opts.maxMessageBytes,
    // Clients such as Bazel keep connections open for a whole build and ping them.
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  });
  for (const [definition, impl] of opts.services) server.addService(definition, impl);
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${opts.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { server, port };
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
