// The HTTP side of every role: /healthz, /metrics (Prometheus text format) and JSON routes under
// /api that roles register.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { CallGuard } from './auth/guard.ts';
import type { Permission } from './auth/permissions.ts';
import type { Presented } from './auth/authenticator.ts';
import { toStatus } from './errors.ts';
import type { httpsOptions } from './tls.ts';
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
  /** HTTPS instead of HTTP. */
  tls?: ReturnType<typeof httpsOptions>;
  /** Who may call: routes under /api need 'reports-read', /metrics too unless `openMetrics`. */
  guard?: CallGuard;
  openMetrics?: boolean;
}

/** gRPC status -> HTTP status, for denials. */
const HTTP_STATUS: Record<number, number> = { 16: 401, 7: 403 };

export async function startHttpServer(opts: HttpServerOptions): Promise<{ server: Server; port: number }> {
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    handle(opts, req, res).catch((err: unknown) => {
      const { code, message } = toStatus(err);
      const denied = HTTP_STATUS[code];
      if (denied) {
        opts.logger.warn({ url: req.url, code }, message);
        if (!res.headersSent) res.writeHead(denied, { 'content-type': 'text/plain', ...(denied === 401 ? { 'www-authenticate': 'Bearer' } : {}) });
        res.end(`${message}\n`);
        return;
      }
      opts.logger.error({ err, url: req.url }, 'HTTP handler failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`internal error: ${message}\n`);
    });
  };
  const server: Server = opts.tls ? createHttpsServer(opts.tls.options, onRequest) : createServer(onRequest);
  const unwatch = opts.tls?.watch((o) => (server as unknown as { setSecureContext(o: object): void }).setSecureContext(o));
  if (unwatch) server.on('close', unwatch);
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
    if (!opts.openMetrics) await admit(opts, req, 'reports-read', 'GET /metrics');
    const body = await opts.metrics.registry.metrics();
    res.writeHead(200, { 'content-type': opts.metrics.registry.contentType }).end(body);
    return;
  }
  const route = opts.routes?.[url.pathname];
  if (route) {
    await admit(opts, req, 'reports-read', `GET ${url.pathname}`);
    const body = await route(url, req);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body, null, 2) + '\n');
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' }).end(`no such path: ${url.pathname}\n`);
}

/** Check an HTTP caller the way gRPC calls are checked (bearer token or client certificate). */
async function admit(opts: HttpServerOptions, req: IncomingMessage, permission: Permission, what: string): Promise<void> {
  if (!opts.guard) return;
  const presented: Presented = {};
  if (typeof req.headers.authorization === 'string') presented.authorization = req.headers.authorization;
  const socket = req.socket as Partial<TLSSocket>;
  const cert = socket.authorized ? socket.getPeerCertificate?.() : undefined;
  if (cert && Object.keys(cert).length > 0) presented.certificate = cert;
  await opts.guard.check(presented, permission, what);
}
