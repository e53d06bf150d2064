// Execution (Execute, WaitExecution) and Operations: the scheduler's client-facing half.
// Execute checks the ActionCache, then merges with an identical in-flight action or enqueues,
// and streams the operation's stages until it is done.
import { randomUUID } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { BlobStore } from '../cas/blob-store.ts';
import type { StoresByFunction } from '../cas/services/storage-context.ts';
import type { Config } from '../common/config.ts';
import { digestKey, validateDigest, type Digest } from '../common/digest.ts';
import { readBlob } from '../cas/blob-io.ts';
import { decodeDirectory } from '../cas/tree.ts';
import { cancelled, failedPrecondition, notFound, unimplemented } from '../common/errors.ts';
import { requestLabels, serverStream, unary, type ServiceContext } from '../common/grpc.ts';
import { principalOf } from '../common/auth/index.ts';
import type { ExecutionHandlers, MessageInput, OperationsHandlers } from '../protos/index.ts';
import { loadAction, preloaded } from '../execution/action-loader.ts';
import type { Auditor } from './auditor.ts';
import type { VerificationPolicy } from './verification-policy.ts';
import type { JobQueue } from '../execution/job-queue.ts';
import { cachedOperation, operationMessage, type Operation } from './operation-message.ts';
import { watchForNoWorker } from './no-worker-watchdog.ts';
import { NO_WORKERS } from '../execution/platform.ts';

export interface ExecutionDeps {
  /** The storage of each digest function; a request's own decides which. */
  stores: StoresByFunction;
  queue: JobQueue;
  config: Config;
  service: (name: string) => ServiceContext;
  /** Decides which executions are verified (run twice). */
  policy: VerificationPolicy;
  /** Told about cache hits served by Execute. */
  auditor: Auditor;
}

/**
 * Stream an operation's updates until it is done or the client goes away; while it waits in the
 * queue, fail it when no live worker can run its platform for the grace period.
 */
function followOperation(
  queue: JobQueue,
  name: string,
  send: (op: Operation) => Promise<void>,
  call: grpc.ServerWritableStream<unknown, unknown>,
  config: Config,
  alreadySent = '',
): Promise<void> {
  return new Promise((resolve, reject) => {
    let lastStage = alreadySent;
    let chain = Promise.resolve();
    let stopWatchdog: (() => void) | undefined;
    const unwatch = queue.watch(name, (state) => {
      if (!stopWatchdog && !state.done) {
        stopWatchdog = watchForNoWorker(queue, name, state.job.platform, { graceMs: config.execution.noWorkerGraceSeconds * 1000 });
      }
      // Send each stage once (and the final state), in order.
      const key = `${state.stage}/${state.done}`;
      if (key === lastStage) return;
      lastStage = key;
      chain = chain
        .then(() => send(operationMessage(state)))
        .then(() => {
          if (state.done) {
            stop();
            resolve();
          }
        })
        .catch((err: unknown) => {
          stop();
          reject(err);
        });
    });
    const stop = () => {
      unwatch();
      stopWatchdog?.();
    };
    call.on('cancelled', () => {
      // The operation keeps running: the client may come back with WaitExecution.
      stop();
      reject(cancelled('the client went away; the operation continues and can be awaited with WaitExecution'));
    });
  });
}

/** The input root and its subdirectories: inputs that jobs share (see JobSpec.localityKeys). */
async function localityKeys(blobs: BlobStore, root: Digest | null): Promise<string[]> {
  if (!root) return [];
  try {
    const dir = decodeDirectory(await readBlob(blobs, root), root);
    return [root.hash, ...dir.directories.flatMap((d) => (d.digest ? [d.digest.hash] : []))];
  } catch {
    return [root.hash];
  }
}

/** Whether no worker at all is registered (NO_WORKERS is what an empty platform then lacks). */
async function noWorkerIsLive(queue: JobQueue): Promise<boolean> {
  const missing = await queue.unsatisfiable({});
  return missing.length === 1 && missing[0] === NO_WORKERS;
}

export function executionService(deps: ExecutionDeps): ExecutionHandlers {
  const ctx = deps.service('Execution');
  const { queue, config } = deps;

  return {
    Execute: serverStream(ctx, 'Execute', async (req, send, call) => {
      const { blobs, actionCache, digestFunction } = deps.stores.resolve(req.instance_name, req.digest_function);
      const actionDigest = validateDigest(req.action_digest, 'action_digest', digestFunction);
      const labels = requestLabels(call.metadata);
      const loaded = await loadAction(blobs, actionDigest, config.execution);
      const doNotCache = loaded.action.do_not_cache;

      if (!req.skip_cache_lookup && !doNotCache) {
        const hit = await actionCache.get(req.instance_name, actionDigest);
        ctx.metrics.actionCacheRequests.inc({ instance: ctx.metrics.labels.instance.of(req.instance_name), result: hit ? 'hit' : 'miss' });
        if (hit) {
          deps.auditor.served(req.instance_name, actionDigest, hit, labels, digestFunction);
          await send(cachedOperation(`operations/cached-${randomUUID()}`, actionDigest, hit as MessageInput<'ActionResult'>, digestFunction.name));
          return;
        }
      }

      // Live workers that cannot run it: a mismatch waiting will not fix, said at once. No live
      // worker at all (a fleet starting, its workers restarting): queued, and failed only when
      // none comes within the grace period (the watchdog of followOperation).
      const unsatisfiable = await queue.unsatisfiable(loaded.platform);
      if (unsatisfiable.length > 0 && !(await noWorkerIsLive(queue))) {
        const asked = unsatisfiable.map((p) => `${p}=${loaded.platform[p] ?? ''}`).join(', ');
        throw failedPrecondition(
          `no worker can run platform properties ${asked} (action ${digestKey(actionDigest)}); ` +
            'start a worker that offers them or change the exec_properties',
        );
      }

      const priority = req.execution_policy?.priority ?? 0;
      const job = {
        instanceName: req.instance_name,
        actionDigest,
        ...(digestFunction.name !== 'SHA256' ? { digestFunction: digestFunction.name } : {}),
        priority,
        platform: loaded.platform,
        doNotCache,
        requestMetadata: { ...labels },
        verify: !doNotCache && (await deps.policy.shouldVerify(labels.mnemonic ?? '')),
        localityKeys: await localityKeys(blobs, loaded.action.input_root_digest),
        ...preloaded(loaded),
      };
      const { operationName, merged } = await queue.submit(job);
      ctx.logger.debug({ operation: operationName, merged, action: actionDigest.hash, ...labels }, 'action queued');
      let sent = '';
      if (!merged) {
        // A worker may take the job before the watch below reports its first state, which would
        // then already be EXECUTING: tell the client it was queued first, so it sees every stage.
        const now = Date.now();
        await send(operationMessage({ name: operationName, job, stage: 'QUEUED', done: false, queuedAt: now, updatedAt: now }));
        sent = 'QUEUED/false';
      }
      await followOperation(queue, operationName, send, call as grpc.ServerWritableStream<unknown, unknown>, config, sent);
    }),

    WaitExecution: serverStream(ctx, 'WaitExecution', async (req, send, call) => {
      await knownOperation(ctx, queue, req.name, call, 'Execution.WaitExecution');
      await followOperation(queue, req.name, send, call as grpc.ServerWritableStream<unknown, unknown>, config);
    }),
  };
}

/** An operation's state; NOT_FOUND when unknown, PERMISSION_DENIED when its instance is not the caller's. */
async function knownOperation(ctx: ServiceContext, queue: JobQueue, name: string, call: object, what: string) {
  const state = await queue.getOperation(name);
  if (!state) throw notFound(`operation "${name}" is unknown (or expired)`);
  const principal = principalOf(call);
  if (principal) ctx.guard?.checkInstance(principal, state.job.instanceName, what);
  return state;
}

export function operationsService(deps: Pick<ExecutionDeps, 'queue' | 'service'>): OperationsHandlers {
  const ctx = deps.service('Operations');
  const { queue } = deps;
  const get = (name: string, call: object, method: string) => knownOperation(ctx, queue, name, call, `Operations.${method}`);
  return {
    GetOperation: unary(ctx, 'GetOperation', async (req, call) => operationMessage(await get(req.name, call, 'GetOperation'))),
    ListOperations: unary(ctx, 'ListOperations', async () => {
      throw unimplemented('ListOperations is not supported; use GetOperation with a name');
    }),
    DeleteOperation: unary(ctx, 'DeleteOperation', async () => {
      throw unimplemented('DeleteOperation is not supported; finished operations expire on their own');
    }),
    CancelOperation: unary(ctx, 'CancelOperation', async (req, call) => {
      await get(req.name, call, 'CancelOperation');
      await queue.cancel(req.name);
      return {};
    }),
    WaitOperation: unary(ctx, 'WaitOperation', async (req, call) => {
      await get(req.name, call, 'WaitOperation');
      const timeoutMs = req.timeout ? Number(req.timeout.seconds) * 1000 + req.timeout.nanos / 1e6 : 60_000;
      return new Promise<Operation>((resolve) => {
        let latest: Operation | undefined;
        let finished = false;
        let stop: (() => void) | undefined;
        const finish = () => {
          if (finished) return;
          finished = true;
          clearTimeout(timer);
          stop?.();
          resolve(latest!);
        };
        const timer = setTimeout(finish, timeoutMs);
        stop = queue.watch(req.name, (state) => {
          latest = operationMessage(state);
          if (state.done) finish();
        });
        if (finished) stop();
      });
    }),
  };
}
