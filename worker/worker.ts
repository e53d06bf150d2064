// A worker: registers with the JobQueue for the platforms it offers and runs each job it takes
// with the action executor. `reapi worker` runs one against Redis; `reapi serve` runs one in its
// own process against the in-process queue.
import { createHash } from 'node:crypto';
import { hostname, tmpdir, availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import type { StoresByFunction } from '../cas/services/storage-context.ts';
import { DIGEST_FUNCTIONS, SHA256, type DigestFunction } from '../common/digest-function.ts';
import type { Config } from '../common/config.ts';
import type { Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import type { JobHandler, JobQueue, PlatformProperties } from '../execution/job-queue.ts';
import { createActionExecutor, prepareExecDir } from './action-executor.ts';
import { LocalContentCache } from './content-cache.ts';
import type { Runner } from '../execution/runner.ts';
import { detectVariationSupport } from './variations.ts';
import { claimWorkDir } from './work-dir-claim.ts';
import type { FeedbackStore } from '../execution/feedback.ts';
import type { ReportStore } from '../execution/report-store.ts';
import { BwrapRunner } from './runners/bwrap-runner.ts';
import { CONTAINER_IMAGE, startDockerRunner } from './runners/docker-runner.ts';
import { selectRunner, startRuntimeRunners } from './runners/runner-selection.ts';

export interface WorkerDeps {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  /** The storage of each digest function: a job runs against its own function's. */
  stores: StoresByFunction;
  queue: JobQueue;
  reports: ReportStore;
  feedback: FeedbackStore;
  /** Default: a BwrapRunner. */
  runner?: Runner;
  name?: string;
}

export interface RunningWorker {
  name: string;
  cache: LocalContentCache;
  stop(): Promise<void>;
}

/**
 * Where exec roots and the content cache live unless configured. Under the system temp dir: the
 * sandbox user must be able to traverse every parent of an exec root, which a checkout under a
 * private home directory does not allow. Keyed by the data dir so two servers never share one.
 */
export function defaultWorkDir(config: Config): string {
  const key = createHash('sha256').update(resolve(config.dataDir)).digest('hex').slice(0, 12);
  return join(tmpdir(), `reapi-worker-${key}`);
}

export async function startWorker(deps: WorkerDeps): Promise<RunningWorker> {
  const { config, logger } = deps;
  // Claimed for this process alone: a second worker started alike gets the next default dir.
  const claim = await claimWorkDir(config.worker.workDir === undefined ? undefined : resolve(config.worker.workDir), defaultWorkDir(config));
  const workDir = claim.dir;
  const name = deps.name ?? config.worker.name ?? `${hostname()}:${process.pid}`;
  const runner = deps.runner ?? new BwrapRunner();
  const ready = await runner.ready?.();
  if (ready !== undefined) logger.info({ runner: runner.name, ready }, 'sandbox ready');
  // One input cache per digest function (its files are named by hash), opened when first needed.
  const caches = new Map<DigestFunction, Promise<LocalContentCache>>();
  const cacheFor = (fn: DigestFunction): Promise<LocalContentCache> => {
    let c = caches.get(fn);
    if (!c) {
      const root = join(workDir, fn === SHA256 ? 'cache' : `cache-${fn.resourceName}`);
      c = LocalContentCache.open({ root, maxBytes: config.worker.cacheMaxBytes, remote: deps.stores.forFunction(fn).blobs, logger });
      caches.set(fn, c);
    }
    return c;
  };
  const cache = await cacheFor(SHA256);
  deps.metrics.sources.inputCache = () => cache.stats;
  const execDir = await prepareExecDir(workDir);
  // Jobs whose platform names a container-image run in Docker; only a worker with an engine
  // advertises them (container-image: '*'), unless its configured platform already decides.
  const docker = await startDockerRunner(config.worker.docker, { logger: logger.child({ component: 'docker' }), workerName: name, stateDir: join(workDir, 'docker') });
  const basePlatform = docker && !(CONTAINER_IMAGE in config.worker.platform) ? { ...config.worker.platform, [CONTAINER_IMAGE]: '*' } : config.worker.platform;
  const concurrency = config.worker.concurrency ?? availableParallelism();
  // Special runtimes (wasm macros, Cargo build scripts under their policy) claim the jobs asking for them.
  const runtimes = await startRuntimeRunners(runner, { logger, stateDir: join(workDir, 'runtimes'), threads: concurrency, visiblePaths: config.worker.buildScripts.visiblePaths, ...(config.worker.buildScripts.toolchains ? { toolchains: config.worker.buildScripts.toolchains } : {}) });
  const platform: PlatformProperties = Object.assign({}, ...runtimes.map((r) => r.platform), basePlatform);
  const variationSupport = await detectVariationSupport();
  const executorFor = async (fn: DigestFunction) => {
    const stores = deps.stores.forFunction(fn);
    return createActionExecutor({
      workerName: name,
      blobs: stores.blobs,
      actionCache: stores.actionCache,
      cache: await cacheFor(fn),
      runner,
      runnerFor: selectRunner({ sandbox: runner, ...(docker ? { docker } : {}), runtimes }),
      execDir,
      config,
      metrics: deps.metrics,
      logger: logger.child({ worker: name }),
      reports: deps.reports,
      feedback: deps.feedback,
      variationSupport,
      queue: deps.queue,
    });
  };
  // A job runs against the storage of its digest function (its hashes mean nothing elsewhere).
  const executors = new Map<DigestFunction, ReturnType<typeof executorFor>>();
  const handler: JobHandler = async (ctx) => {
    const fn = DIGEST_FUNCTIONS[ctx.job.digestFunction ?? 'SHA256'];
    let executor = executors.get(fn);
    if (!executor) executors.set(fn, (executor = executorFor(fn)));
    return (await executor)(ctx);
  };
  const stopWork = await deps.queue.work({ name, platform, concurrency }, handler);
  logger.info({ worker: name, workDir, concurrency, platform, runner: runner.name, docker: docker !== undefined }, 'worker taking jobs');
  return {
    name,
    cache,
    stop: async () => {
      await stopWork();
      await runner.dispose?.();
      await docker?.dispose();
      for (const r of runtimes) await r.dispose();
      await claim.release();
    },
  };
}
