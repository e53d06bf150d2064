// A throwaway redis-server for integration tests: free port, no persistence, its own temp dir.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findOnPath } from './commands.ts';
import { freePort } from './net.ts';

/** A skip reason for tests that start a redis-server, or false when they can run. */
export const redisSkip: string | false = findOnPath('redis-server') ? false : 'redis-server is not installed';

export interface TestRedis {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Whether the server answers (any reply will do: with a password, PING answers NOAUTH). */
function ping(port: number, ca?: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = ca ? tlsConnect({ host: '127.0.0.1', port, ca: [ca] }) : createConnection({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.once('error', () => done(false));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG') || (ca !== undefined && buf.startsWith('-NOAUTH')));
    });
    sock.once(ca ? 'secureConnect' : 'connect', () => sock.write('PING\r\n'));
  });
}

/** `tls`: serve `rediss://` only, with this certificate, and require `password`. */
export async function startRedis(opts: { tls?: { cert: string; key: string; ca: string }; password?: string } = {}): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'reapi-redis-'));
  const port = await freePort();
  const listen = opts.tls
    ? ['--port', '0', '--tls-port', String(port), '--tls-cert-file', opts.tls.cert, '--tls-key-file', opts.tls.key, '--tls-auth-clients', 'no']
    : ['--port', String(port)];
  const child = spawn(
    'redis-server',
    [...listen, ...(opts.password ? ['--requirepass', opts.password] : []), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const ca = opts.tls ? readFileSync(opts.tls.ca) : undefined;
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let spawnError: Error | undefined;
  child.once('error', (err) => (spawnError = err));

  const deadline = Date.now() + 10_000;
  for (;;) {
    if (spawnError) throw new Error(`could not start redis-server: ${spawnError.message}`);
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}: ${output}`);
    if (await ping(port, ca)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer PING on port ${port}: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  let stopped: Promise<void> | undefined;
  return {
    url: `${opts.tls ? 'rediss' : 'redis'}://${opts.password ? `:${encodeURIComponent(opts.password)}@` : ''}127.0.0.1:${port}`,
    port,
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await exited;
        }
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}
