// The HTTP side of every role: /healthz, /metrics (Prometheus text format) and JSON routes under
// /api that roles register.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';

export type JsonRoute = (url: URL, req: IncomingMessage) => Promise<unknown>;

export interface HttpServerOptions {
  port: number;
  host: string;
  metrics: Metrics;
  logger: Logger;
  /** Extra readiness check; /healthz answers 503 with its message when it throws. */
  health?: () => Promise<void>;
  /** Routes by exact path, e.g. '/api/reports'. */
  routes?: Record<string, JsonRoute>;
}

export async function startHttpServer(opts: HttpServerOptions): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    handle(opts, req, res).catch((err: unknown) => {
      opts.logger.error({ err, url: req.url }, 'HTTP handler failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`internal error: ${(err as Error).message}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}

async function handle(opts: HttpServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/healthz') {
    try {
      await opts.health?.();
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } catch (err) {
      res.writeHead(503, { 'content-type': 'text/plain' }).end(`unhealthy: ${(err as Error).message}\n`);
    }
    return;
  }
  if (url.pathname === '/metrics') {
    const body = await opts.metrics.registry.metrics();
    res.writeHead(200, { 'content-type': opts.metrics.registry.contentType }).end(body);
    return;
  }
  const route = opts.routes?.[url.pathname];
  if (route) {
    const body = await route(url, req);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body, null, 2) + '\n');
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' }).end(`no such path: ${url.pathname}\n`);
}
