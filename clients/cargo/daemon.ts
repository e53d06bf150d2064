// The `reapi cargo` side of the build-script helper: a Unix socket server in the `reapi cargo`
// process. Each connection is one build script (clients/cargo/trampoline.mjs sends one JSON line:
// binary, args, cwd, env) and gets one JSON line back: exit code, stdout and stderr (base64). The
// process keeps the gRPC channel, the policy, file digests and the rustc release across scripts.
import { createServer, type Server } from 'node:net';
import { rm } from 'node:fs/promises';
import { z } from 'zod';

import { runBuildScript, type BuildScriptResult, type ClientContext } from './build-script-action.ts';

const requestSchema = z.object({
  binary: z.string().min(1),
  args: z.array(z.string()),
  cwd: z.string(),
  env: z.record(z.string(), z.string()),
});

export interface BuildScriptRecord {
  crate: string;
  source: BuildScriptResult['source'];
  exitCode: number;
  actionDigest?: string;
  ms: number;
  warning?: string;
  timings?: Record<string, number>;
}

export interface CargoDaemon {
  socket: string;
  /** One record per build script run so far. */
  records: BuildScriptRecord[];
  close(): Promise<void>;
}

export async function startDaemon(ctx: ClientContext, socket: string, onResult?: (r: BuildScriptRecord) => void): Promise<CargoDaemon> {
  const records: BuildScriptRecord[] = [];
  await rm(socket, { force: true });
  const server: Server = createServer((conn) => {
    let buf = '';
    let started = false;
    conn.setEncoding('utf8');
    conn.on('error', () => {});
    conn.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0 || started) return;
      started = true;
      const t0 = Date.now();
      void (async () => {
        let result: BuildScriptResult;
        const parsed = requestSchema.safeParse((() => { try { return JSON.parse(buf.slice(0, nl)) as unknown; } catch { return undefined; } })());
        if (!parsed.success) {
          result = { exitCode: 1, stdout: Buffer.alloc(0), stderr: Buffer.from('reapi: malformed build-script request\n'), crate: 'unknown', source: 'error' };
        } else {
          result = await runBuildScript(ctx, parsed.data);
        }
        const record: BuildScriptRecord = { crate: result.crate, source: result.source, exitCode: result.exitCode, ms: Date.now() - t0 };
        if (result.actionDigest) record.actionDigest = `${result.actionDigest.hash}/${result.actionDigest.size_bytes}`;
        if (result.warning) record.warning = result.warning;
        if (result.timings) record.timings = result.timings;
        records.push(record);
        onResult?.(record);
        conn.end(JSON.stringify({ exitCode: result.exitCode, stdout: result.stdout.toString('base64'), stderr: result.stderr.toString('base64') }) + '\n');
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => resolve());
  });
  return {
    socket,
    records,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(socket, { force: true });
    },
  };
}
