// Operation state in Redis: one hash per operation (kept `doneTtlMs` after done), so any
// scheduler (a restarted one too) can answer getOperation / watch. Every change goes through a
// Lua script that also announces it on the events channel.
import type { JobSpec, OperationState, Stage } from '../../../execution/job-queue.ts';
import type { OperationError } from '../rules.ts';
import type { BullmqContext } from './context.ts';
import type { ScriptArg } from './scripts.ts';

/** A new operation: where its job goes and what it merges on. */
export interface NewOperation {
  name: string;
  job: JobSpec;
  jobId: string;
  /** The stored merge hash, '' when the job is not mergeable. */
  mergeHash: string;
  /** The platform's shared queue, and the queue the job is added to (personal when routed). */
  sharedQueue: string;
  queue: string;
  /** The worker whose personal queue it goes to, if any. */
  routedTo?: string;
}

/** One delivery as counted: the job, how many deliveries so far, the worker of the previous one. */
export interface Delivery {
  deliveries: number;
  job: JobSpec;
  previousWorker: string;
  queuedAt?: number;
}

export function decodeOp(h: Record<string, string>): OperationState | undefined {
  if (!h.name || !h.job) return undefined;
  const st: OperationState = {
    name: h.name,
    job: JSON.parse(h.job) as JobSpec,
    stage: (h.stage ?? 'QUEUED') as Stage,
    done: h.done === '1',
    queuedAt: Number(h.queuedAt),
    updatedAt: Number(h.updatedAt),
  };
  if (h.worker) st.worker = h.worker;
  if (h.response !== undefined) st.response = Buffer.from(h.response, 'base64');
  if (h.error) st.error = JSON.parse(h.error) as OperationError;
  return st;
}

export class OperationStore {
  constructor(private readonly ctx: BullmqContext) {}

  /** The raw hash (empty when unknown). */
  raw(name: string): Promise<Record<string, string>> {
    return this.ctx.cmd.hgetall(this.ctx.keys.op(name));
  }

  async get(name: string): Promise<OperationState | undefined> {
    return decodeOp(await this.raw(name));
  }

  /** The operation and its version, for watchers. */
  async getVersioned(name: string): Promise<{ state: OperationState; ver: number } | undefined> {
    const h = await this.raw(name);
    const state = decodeOp(h);
    return state && { state, ver: Number(h.ver ?? 0) };
  }

  async isDone(name: string): Promise<boolean> {
    return (await this.ctx.cmd.hget(this.ctx.keys.op(name), 'done')) !== '0';
  }

  /**
   * Create the operation, or find the in-flight one it merges with. `platformIsNew`: this was
   * the first job ever for its platform.
   */
  async create(op: NewOperation): Promise<{ merged?: string; platformIsNew: boolean }> {
    const { keys, settings } = this.ctx;
    const now = String(Date.now());
    const fields: ScriptArg[] = [
      'name', op.name,
      'job', JSON.stringify(op.job),
      'stage', 'QUEUED',
      'done', '0',
      'queuedAt', now,
      'updatedAt', now,
      'queue', op.queue,
      'jobId', op.jobId,
      'mergeKey', op.mergeHash,
      'deliveries', '0',
      'ver', '0',
    ];
    const opKey = keys.op(op.name);
    const r = await this.ctx.cmd.submitOp(
      opKey,
      op.mergeHash ? keys.mergePrefix + op.mergeHash : opKey,
      keys.platforms,
      keys.personal,
      op.name,
      op.mergeHash ? '1' : '0',
      keys.opPrefix,
      settings.inFlightTtlMs,
      op.sharedQueue,
      JSON.stringify(op.job.platform),
      op.routedTo ? op.queue : '',
      op.routedTo ?? '',
      ...fields,
    );
    return { merged: r[0] || undefined, platformIsNew: r[1] === 1 };
  }

  /** Finish it; false when it was done already (the first finisher wins). */
  async finish(name: string, result: { response?: Buffer; error?: OperationError }): Promise<boolean> {
    const { keys, settings } = this.ctx;
    const fields: ScriptArg[] = [];
    if (result.response) fields.push('response', result.response.toString('base64'));
    if (result.error) fields.push('error', JSON.stringify(result.error));
    const r = await this.ctx.cmd.finishOp(keys.op(name), keys.events, name, settings.doneTtlMs, keys.mergePrefix, Date.now(), ...fields);
    return r === 1;
  }

  /** Move it to a stage, naming its worker; false when it is done. */
  async update(name: string, stage: Stage, worker: string): Promise<boolean> {
    const r = await this.ctx.cmd.updateOp(this.ctx.keys.op(name), this.ctx.keys.events, name, stage, worker, Date.now());
    return r === 1;
  }

  /** Count a delivery to `worker`; undefined when the operation is done or gone. */
  async deliver(name: string, worker: string): Promise<Delivery | undefined> {
    const d = await this.ctx.cmd.deliverJob(this.ctx.keys.op(name), worker, Date.now(), this.ctx.keys.events, name);
    if (d[0] !== 'ok') return undefined;
    return {
      deliveries: Number(d[1]),
      job: JSON.parse(String(d[2])) as JobSpec,
      previousWorker: String(d[3] ?? ''),
      queuedAt: Number(d[4]) || undefined,
    };
  }

  /** Point it at the queue its job moves to; true when this caller is the one to move it. */
  async requeue(name: string, from: string, to: string): Promise<boolean> {
    return (await this.ctx.cmd.requeueOp(this.ctx.keys.op(name), from, to)) === 1;
  }
}
