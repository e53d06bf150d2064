// One role's network face: the gRPC services on --port and /metrics, /healthz and /api routes on
// --http-port.
import type { Server as HttpServer } from 'node:http';
import type * as grpc from '@grpc/grpc-js';
import type { Config } from './config.ts';
import { startGrpcServer, stopGrpcServer } from './grpc-server.ts';
import { startHttpServer, type JsonRoute } from './http-server.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { CallGuard } from './auth/guard.ts';
import { grpcServerCredentials, httpsOptions } from './tls.ts';

export interface RunningServer {
  grpcPort: number;
  httpPort: number;
  close(): Promise<void>;
}

export async function startServer(opts: {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  services: Array<[grpc.ServiceDefinition, grpc.UntypedServiceImplementation]>;
  routes?: Record<string, JsonRoute>;
  health?: () => Promise<void>;
  /** Who may call the HTTP side (the gRPC services carry it in their contexts). */
  guard?: CallGuard;
}): Promise<RunningServer> {
  const { config, logger, metrics } = opts;
  const grpcServer = opts.services.length
    ? await startGrpcServer({ host: config.listen, port: config.port, maxMessageBytes: config.maxMessageBytes, services: opts.services, credentials: grpcServerCredentials(config.tls) }).catch(
        (err: unknown) => {
          throw portError(err, config.listen, config.port, '--port');
        },
      )
    : undefined;
  let http: HttpServer;
  let httpPort: number;
  try {
    ({ server: http, port: httpPort } = await startHttpServer({
      host: config.listen,
      port: config.httpPort,
      metrics,
      logger,
      routes: opts.routes,
      health: opts.health,
      tls: httpsOptions(config.tls),
      ...(opts.guard ? { guard: opts.guard } : {}),
      openMetrics: config.auth.openMetrics,
    }));
  } catch (err) {
    if (grpcServer) await stopGrpcServer(grpcServer.server, 0);
    throw portError(err, config.listen, config.httpPort, '--http-port');
  }
  return {
    grpcPort: grpcServer?.port ?? 0,
    httpPort,
    close: async () => {
      await Promise.all([
        grpcServer ? stopGrpcServer(grpcServer.server) : Promise.resolve(),
        new Promise<void>((r) => http.close(() => r())),
      ]);
    },
  };
}

/** A port already taken, said with the flag that moves it; other errors as they are. */
function portError(err: unknown, host: string, port: number, flag: string): unknown {
  const text = `${(err as { code?: unknown }).code ?? ''} ${(err as Error).message ?? ''}`;
  if (!/EADDRINUSE|address already in use/i.test(text)) return err;
  return new Error(`port ${port} on ${host} is already in use (another reapi role on this machine?): pass ${flag} N, or ${flag} 0 for any free port`, { cause: err });
}
