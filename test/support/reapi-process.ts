// Runs the real `reapi` command as a child process, the way users and Bazel see it.
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/reapi.mjs');

export interface ReapiProcess {
  child: ChildProcess;
  grpcPort: number;
  httpPort: number;
  endpoint: string;
  /** Everything written to stderr so far (JSON log lines). */
  logs(): string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL the whole process group. */
  kill(): Promise<void>;
}

/** The fleet token the roles started here share (at least 16 characters, like a real one). */
export const TEST_FLEET_TOKEN = 'test-fleet-token-0123456789abcdef';

/** `port`: the gRPC port to listen on (default 0: a free one), e.g. to restart a role where clients expect it. */
export async function startReapi(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; port?: number } = {},
): Promise<ReapiProcess> {
  const child = spawn(process.execPath, [BIN, ...args, '--port', String(opts.port ?? 0), '--http-port', '0', '--listen', '127.0.0.1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Every role a test starts belongs to one fleet: storage nodes take ActionCache writes only
    // from callers presenting this token.
    env: { REAPI_FLEET_TOKEN: TEST_FLEET_TOKEN, ...process.env, ...opts.env },
    detached: true,
  });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const ports = await new Promise<{ grpc: number; http: number }>((resolvePorts, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`reapi ${args[0]} did not start in time:\n${stderr}`)), opts.timeoutMs ?? 30_000);
    child.stdout!.on('data', (b: Buffer) => {
      stdout += b.toString();
      const m = /listening grpc=(\d+) http=(\d+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolvePorts({ grpc: Number(m[1]), http: Number(m[2]) });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`reapi ${args[0]} exited with ${code} before listening:\n${stderr}`));
    });
  });
  return {
    child,
    grpcPort: ports.grpc,
    httpPort: ports.http,
    endpoint: `grpc://127.0.0.1:${ports.grpc}`,
    logs: () => stderr,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
    kill: async () => {
      if (child.exitCode === null && child.pid) process.kill(-child.pid, 'SIGKILL');
      await exited;
    },
  };
}

/** GET a path on the HTTP port and return the body. */
export async function httpGet(port: number, path: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return res.text();
}

/** The value of one sample line of Prometheus text output, e.g. `name{a="b"}`; 0 when absent. */
export function metricValue(text: string, sample: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(sample + ' ')) return Number(line.slice(sample.length + 1));
  }
  return 0;
}
