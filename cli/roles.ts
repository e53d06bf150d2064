// What each `reapi` subcommand runs, built from config. Tests start roles through these too.
import { serviceContexts, startStorageNode, storageServices, type ServiceList } from '../cas/storage-node.ts';
import { createStorage, type Storage } from '../cas/storage-factory.ts';
import type { QuarantineHooks } from '../cas/write-policy-action-cache.ts';
import type { Config } from '../common/config.ts';
import { messageOf } from '../common/errors.ts';
import { createGuard, type CallGuard } from '../common/auth/index.ts';
import type { Logger } from '../common/logger.ts';
import { Metrics } from '../common/metrics.ts';
import { startServer } from '../common/server.ts';
import { serviceDefinitions } from '../protos/index.ts';
import { BullmqJobQueue } from '../scheduler/queue/bullmq/index.ts';
import { executionService, operationsService } from '../scheduler/execution-service.ts';
import { InProcessJobQueue } from '../scheduler/queue/in-process-queue.ts';
import type { JobQueue } from '../execution/job-queue.ts';
import { startWorker } from '../worker/worker.ts';
import type { JsonRoute } from '../common/http-server.ts';
import { Auditor } from '../scheduler/auditor.ts';
import { MemoryFeedbackStore, RedisFeedbackStore, type FeedbackStore } from '../execution/feedback.ts';
import { MemoryReportStore, RedisReportStore, type ReportStore } from '../execution/report-store.ts';
import { VerificationPolicy } from '../scheduler/verification-policy.ts';

export interface RunningRole {
  grpcPort: number;
  httpPort: number;
  close(): Promise<void>;
}

function createQueue(config: Config, logger: Logger): JobQueue {
  if (config.redis) {
    return new BullmqJobQueue({
      redisUrl: config.redis,
      ...(config.redisCa !== undefined ? { redisCa: config.redisCa } : {}),
      maxAttempts: config.execution.maxAttempts,
      locality: config.execution.locality,
      logger: logger.child({ component: 'queue' }),
    });
  }
  return new InProcessJobQueue({ maxAttempts: config.execution.maxAttempts, locality: config.execution.locality, logger: logger.child({ component: 'queue' }) });
}

/** Reports, feedback, verification policy and auditor: shared by scheduler and workers. */
function createVerification(config: Config, logger: Logger, stores: Storage, queue: JobQueue) {
  const redis = config.redis ? { url: config.redis, ...(config.redisCa !== undefined ? { ca: config.redisCa } : {}) } : undefined;
  const reports: ReportStore = redis ? new RedisReportStore(redis) : new MemoryReportStore();
  const feedback: FeedbackStore = redis ? new RedisFeedbackStore(redis) : new MemoryFeedbackStore();
  const policy = new VerificationPolicy(feedback, config.verification.verifyRate, config.verification.auditRate);
  const auditor = new Auditor({ stores, queue, policy, config, logger: logger.child({ component: 'auditor' }) });
  return {
    reports,
    feedback,
    policy,
    auditor,
    routes: { '/api/reports': reportsRoute(reports) },
    close: async () => {
      await reports.close();
      await feedback.close();
    },
  };
}

function reportsRoute(reports: ReportStore): JsonRoute {
  return async (url) => {
    const kind = url.searchParams.get('kind');
    return reports.list({
      target: url.searchParams.get('target') ?? undefined,
      mnemonic: url.searchParams.get('mnemonic') ?? undefined,
      kind: kind === 'nondeterministic' || kind === 'cache-poisoning' ? kind : undefined,
      limit: Number(url.searchParams.get('limit') ?? 100) || 100,
    });
  };
}

function executionServices(deps: Parameters<typeof executionService>[0]): ServiceList {
  return [
    [serviceDefinitions.Execution, executionService(deps)],
    [serviceDefinitions.Operations, operationsService(deps)],
  ] as ServiceList;
}

/**
 * The client-facing half shared by `reapi serve` and `reapi scheduler`: queue, verification, the
 * storage services over `blobs`/`actionCache` with the execution write policy, and Execution.
 */
function frontDoor(config: Config, logger: Logger, metrics: Metrics, storage: Storage, hooks: QuarantineHooks, guard: CallGuard) {
  const queue = createQueue(config, logger);
  metrics.sources.queue = () => queue.stats();
  const v = createVerification(config, logger, storage, queue);
  // The write policy of the storage chain hands quarantined client writes to the auditor.
  hooks.onQuarantine = (...args) => v.auditor.quarantinedWrite(...args);
  const service = serviceContexts(metrics, logger, guard);
  const storageSvc = storageServices({
    stores: storage,
    clientWrites: storage.clientWrites,
    config,
    service,
    execEnabled: true,
    assets: true,
    onServed: (...args) => v.auditor.served(...args),
  });
  const services = [...storageSvc.services, ...executionServices({ stores: storage, queue, config, service, policy: v.policy, auditor: v.auditor })];
  return {
    queue,
    verification: v,
    services,
    close: async () => {
      await queue.close();
      await v.close();
      storageSvc.close();
    },
  };
}

/** `reapi serve`: storage, scheduler and a local worker in one process. */
export async function startServe(config: Config, logger: Logger, metrics = new Metrics({ instanceNames: config.metrics.instanceNames })): Promise<RunningRole> {
  const guard = createGuard(config);
  const hooks: QuarantineHooks = {};
  const storage = await createStorage('serve', { config, metrics, logger, hooks });
  if (!config.execution.enabled) {
    const storageSvc = storageServices({ stores: storage, clientWrites: storage.clientWrites, config, service: serviceContexts(metrics, logger, guard), execEnabled: false, assets: true });
    const server = await startServer({ config, logger, metrics, services: storageSvc.services, guard });
    logger.info({ grpcPort: server.grpcPort, httpPort: server.httpPort, dataDir: config.dataDir, execution: false }, 'reapi serve listening');
    return { ...server, close: async () => (await server.close(), storageSvc.close()) };
  }
  const front = frontDoor(config, logger, metrics, storage, hooks, guard);
  const v = front.verification;
  const worker = await startWorker({ config, logger, metrics, stores: storage, queue: front.queue, reports: v.reports, feedback: v.feedback }).catch(
    (err: unknown) => {
      throw new Error(
        `cannot start the sandboxed local worker: ${messageOf(err)}. ` +
          'Executing actions needs root and bubblewrap (scripts/bootstrap.sh installs it); use --no-execution for a remote cache only.',
        { cause: err },
      );
    },
  );
  const server = await startServer({ config, logger, metrics, services: front.services, routes: v.routes, guard });
  logger.info(
    { grpcPort: server.grpcPort, httpPort: server.httpPort, dataDir: config.dataDir, execution: true, verifyRate: config.verification.verifyRate, auditRate: config.verification.auditRate },
    'reapi serve listening',
  );
  return {
    ...server,
    close: async () => {
      await server.close();
      await worker.stop();
      await front.close();
    },
  };
}

/** `reapi cas`: a storage node. */
export async function startCas(config: Config, logger: Logger): Promise<RunningRole> {
  return startStorageNode(config, logger);
}

/** `reapi scheduler`: the whole REAPI surface; storage forwarded to the --cas nodes, jobs on Redis. */
export async function startScheduler(config: Config, logger: Logger, metrics = new Metrics({ instanceNames: config.metrics.instanceNames })): Promise<RunningRole> {
  if (!config.redis) throw new Error('reapi scheduler needs --redis URL (or REDIS_URL)');
  const guard = createGuard(config);
  const hooks: QuarantineHooks = {};
  const storage = await createStorage('scheduler', { config, metrics, logger, hooks });
  const front = frontDoor(config, logger, metrics, storage, hooks, guard);
  const server = await startServer({ config, logger, metrics, services: front.services, routes: front.verification.routes, guard });
  logger.info({ grpcPort: server.grpcPort, httpPort: server.httpPort, cas: config.cas }, 'reapi scheduler listening');
  return {
    ...server,
    close: async () => {
      await server.close();
      await front.close();
      storage.close();
    },
  };
}

/** `reapi worker`: takes jobs from Redis, reads and writes the --cas nodes. */
export async function startWorkerRole(config: Config, logger: Logger, metrics = new Metrics({ instanceNames: config.metrics.instanceNames })): Promise<RunningRole> {
  if (!config.redis) throw new Error('reapi worker needs --redis URL (or REDIS_URL)');
  const storage = await createStorage('worker', { config, metrics, logger });
  const queue = createQueue(config, logger);
  const v = createVerification(config, logger, storage, queue);
  // The HTTP side first: a worker that cannot bind its port must fail before it registers and
  // takes jobs it would then abandon.
  const server = await startServer({ config, logger, metrics, services: [], guard: createGuard(config) });
  let worker: Awaited<ReturnType<typeof startWorker>>;
  try {
    worker = await startWorker({ config, logger, metrics, stores: storage, queue, reports: v.reports, feedback: v.feedback });
  } catch (err) {
    await server.close();
    throw err;
  }
  return {
    ...server,
    close: async () => {
      await worker.stop();
      await queue.close();
      await v.close();
      await server.close();
      storage.close();
    },
  };
}
