// `reapi serve` in this process for integration tests: free ports, temp data and work dirs (the
// work dir traversable by the sandbox user), silent logs, its own metrics registry, and a client.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServe, type RunningRole } from '../../cli/roles.ts';
import { mergeConfig, parseConfig, type Config } from '../../common/config.ts';
import { silentLogger } from '../../common/logger.ts';
import { Metrics } from '../../common/metrics.ts';
import { connectExec, type ExecClients } from './execution.ts';

export interface TestServe {
  server: RunningRole;
  config: Config;
  metrics: Metrics;
  /** A client of the server for `instance`. */
  c: ExecClients;
  dataDir: string;
  workDir: string;
  close(): Promise<void>;
}

/** Start it; `overrides` are merged over the test defaults (worker concurrency 2). */
export async function startTestServe(overrides: Record<string, unknown> = {}, opts: { name?: string; instance?: string } = {}): Promise<TestServe> {
  const name = opts.name ?? 'reapi-test';
  const dataDir = await mkdtemp(join(tmpdir(), `${name}-data-`));
  const workDir = await mkdtemp(join(tmpdir(), `${name}-work-`));
  // The sandbox user must traverse the work dir to reach its exec roots.
  await chmod(workDir, 0o755);
  const config = parseConfig(
    mergeConfig({ port: 0, httpPort: 0, listen: '127.0.0.1', dataDir, logLevel: 'silent', worker: { concurrency: 2, workDir } }, overrides),
  );
  const metrics = new Metrics({ defaultMetrics: false });
  let server: RunningRole;
  try {
    server = await startServe(config, silentLogger, metrics);
  } catch (err) {
    for (const d of [dataDir, workDir]) await rm(d, { recursive: true, force: true });
    throw err;
  }
  const c = connectExec(`127.0.0.1:${server.grpcPort}`, opts.instance ?? 'main');
  return {
    server,
    config,
    metrics,
    c,
    dataDir,
    workDir,
    close: async () => {
      c.close();
      await server.close();
      for (const d of [dataDir, workDir]) await rm(d, { recursive: true, force: true });
    },
  };
}
