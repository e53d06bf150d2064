// The "another worker" variation of a verification: hand the second run to a free worker with the
// same platform, as a job of its own, and wait for its result. When no worker is free, or the one
// chosen has not started within the configured time, the caller runs it here instead.
import { decode, encode, type MessageInput, type MessageOutput } from '../protos/index.ts';
import { Status } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { JobQueue, JobSpec, OperationState } from '../execution/job-queue.ts';

/** What the other worker answers besides the ActionResult (in ExecuteResponse.message). */
export interface SecondRunNote {
  /** The run's outcome label ('success', 'nonzero-exit', 'timeout', ...). */
  label: string;
  /** What the other worker varied. */
  described: string[];
}

export interface SecondRun {
  result: MessageInput<'ActionResult'>;
  verdict: { label: string; status: number; message: string };
  described: string[];
}

/** The response a worker sends for a `verificationRun` job. */
export function encodeSecondRun(result: MessageInput<'ActionResult'>, note: SecondRunNote): Buffer {
  return encode('ExecuteResponse', { result, status: { code: Status.OK, message: '' }, message: JSON.stringify(note) });
}

function decodeSecondRun(state: OperationState, worker: string): SecondRun | undefined {
  if (!state.response) return undefined;
  const response = decode('ExecuteResponse', state.response);
  if (!response.result || (response.status && response.status.code !== Status.OK)) return undefined;
  let note: SecondRunNote;
  try {
    note = JSON.parse(response.message) as SecondRunNote;
  } catch {
    return undefined;
  }
  return {
    result: response.result as MessageOutput<'ActionResult'> as MessageInput<'ActionResult'>,
    verdict: { label: note.label, status: Status.OK, message: '' },
    described: [`another worker (${worker})`, ...note.described],
  };
}

export interface ElsewhereOptions {
  queue: JobQueue;
  workerName: string;
  /** How long the chosen worker may take to start the job before it is taken back. */
  startMs: number;
  signal: AbortSignal;
  log: Logger;
}

/**
 * The second run of `job` on another free worker, or undefined when there is none, it did not
 * start in time, or it could not produce a result (the caller then runs it itself).
 */
export async function secondRunElsewhere(job: JobSpec, opts: ElsewhereOptions): Promise<SecondRun | undefined> {
  const { queue, log } = opts;
  if (opts.startMs <= 0) return undefined;
  const [other] = await queue.freeWorkers(job.platform, opts.workerName);
  if (other === undefined) return undefined;
  const sub: JobSpec = {
    instanceName: job.instanceName,
    actionDigest: job.actionDigest,
    priority: job.priority,
    platform: job.platform,
    doNotCache: true,
    ...(job.requestMetadata ? { requestMetadata: job.requestMetadata } : {}),
    ...(job.localityKeys ? { localityKeys: job.localityKeys } : {}),
    ...(job.loaded ? { loaded: job.loaded } : {}),
    verificationRun: { firstWorker: opts.workerName },
  };
  const { operationName } = await queue.submit(sub, { worker: other });
  const final = await new Promise<OperationState | undefined>((resolve) => {
    let settled = false;
    let stop: () => void = () => {};
    const finish = (state: OperationState | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal.removeEventListener('abort', onAbort);
      stop();
      resolve(state);
    };
    const takeBack = (why: string): void => {
      void queue.cancel(operationName).then(
        (cancelled) => {
          if (cancelled) {
            log.debug({ worker: other, why }, 'second run taken back from the other worker');
            finish(undefined);
          }
        },
        () => finish(undefined),
      );
    };
    const onAbort = (): void => takeBack('cancelled');
    const timer = setTimeout(() => {
      void queue.getOperation(operationName).then((s) => {
        if (!s || s.stage === 'QUEUED') takeBack(`not started within ${opts.startMs} ms`);
      });
    }, opts.startMs);
    opts.signal.addEventListener('abort', onAbort, { once: true });
    stop = queue.watch(operationName, (state) => {
      if (state.done) finish(state);
    });
  });
  if (!final) return undefined;
  const ran = final.worker || other;
  const second = decodeSecondRun(final, ran);
  if (!second) log.warn({ worker: ran, error: final.error?.message }, 'the other worker gave no usable second run; running it here');
  return second;
}
