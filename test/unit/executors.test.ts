// The worker's execution layers one at a time, with a fake runner (or a fake layer below) and
// memory stores: what each adds, and that the caching layer alone writes the ActionCache.
import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { putBlob, readBlob } from '../../cas/blob-io.ts';
import { MemoryActionCache } from '../../cas/memory-action-cache.ts';
import { MemoryBlobStore } from '../../cas/memory-blob-store.ts';
import { provenanceOf } from '../../cas/provenance.ts';
import { parseConfig } from '../../common/config.ts';
import { digestOf, type Digest } from '../../common/digest.ts';
import { silentLogger } from '../../common/logger.ts';
import { Metrics } from '../../common/metrics.ts';
import type { LoadedAction } from '../../execution/action-loader.ts';
import { MemoryFeedbackStore } from '../../execution/feedback.ts';
import type { JobContext, JobSpec } from '../../execution/job-queue.ts';
import { MemoryReportStore } from '../../execution/report-store.ts';
import type { Runner, RunSpec } from '../../execution/runner.ts';
import { decode, encode, type MessageInput } from '../../protos/index.ts';
import { LocalContentCache } from '../../worker/content-cache.ts';
import { CachingExecutor } from '../../worker/executors/caching-executor.ts';
import { LocalExecutor } from '../../worker/executors/local-executor.ts';
import { MetricsExecutor } from '../../worker/executors/metrics-executor.ts';
import { SingleRunExecutor } from '../../worker/executors/single-run-executor.ts';
import type { ActionExecutor, ActionOutcome, Run, RunExecutor, RunRequest } from '../../worker/executors/types.ts';
import { VerifyingExecutor } from '../../worker/executors/verifying-executor.ts';
import { Verifier } from '../../worker/verifier.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'reapi-executors-'));
  dirs.push(d);
  return d;
}

const config = parseConfig({ verification: { otherWorkerStartMs: 0 } });

function job(over: Partial<JobSpec> = {}): JobSpec {
  return { instanceName: 'main', actionDigest: digestOf(Buffer.from('the action')), priority: 0, platform: {}, doNotCache: false, requestMetadata: { mnemonic: 'Gen' }, ...over };
}

function jobContext(spec: JobSpec): JobContext {
  return { operationName: 'operations/x', job: spec, attempt: 0, queuedAt: Date.now() - 5, signal: new AbortController().signal, markExecuting: async () => {} };
}

async function loadedAction(blobs: MemoryBlobStore, doNotCache = false): Promise<LoadedAction> {
  const input = await putBlob(blobs, Buffer.from('input text\n'));
  const root = await putBlob(blobs, encode('Directory', { files: [{ name: 'in.txt', digest: input, is_executable: false }] }));
  const command = decode('Command', encode('Command', { arguments: ['gen', 'suffix'], output_paths: ['out.txt'] }));
  const action = decode('Action', encode('Action', { command_digest: digestOf(encode('Command', command)), input_root_digest: root, do_not_cache: doNotCache }));
  return { action, command, platform: {}, timeoutMs: 10_000 };
}

/** Runs nothing: reads in.txt and writes out.txt = in.txt + argv[1], as a sandboxed command would. */
class FakeRunner implements Runner {
  readonly name = 'fake';
  specs: RunSpec[] = [];
  async run(spec: RunSpec) {
    this.specs.push(spec);
    const input = await readFile(join(spec.execRoot, 'in.txt'));
    await writeFile(join(spec.execRoot, 'out.txt'), Buffer.concat([input, Buffer.from(spec.argv[1]!)]));
    const now = new Date();
    return { exitCode: 0, stdout: Buffer.from('made it\n'), stderr: Buffer.alloc(0), truncated: false, startedAt: now, completedAt: now, usage: { userCpuMs: 1, systemCpuMs: 1, maxRssBytes: 1 } };
  }
}

/** A layer below that answers runs from a list. */
class ScriptedRuns implements RunExecutor {
  requests: RunRequest[] = [];
  constructor(private readonly runs: Run[]) {}
  async run(req: RunRequest): Promise<Run> {
    this.requests.push(req);
    const next = this.runs.shift();
    if (!next) throw new Error('no more scripted runs');
    return next;
  }
}

async function runWithOutput(blobs: MemoryBlobStore, text: string): Promise<Run> {
  const digest = await putBlob(blobs, Buffer.from(text));
  const t = Date.now();
  return {
    result: { exit_code: 0, output_files: [{ path: 'out.txt', digest, is_executable: false }] } satisfies MessageInput<'ActionResult'>,
    verdict: { label: 'success', status: 0, message: '' },
    cacheable: true,
    timings: { workerStart: t, fetchEnd: t + 1, execEnd: t + 3, uploadEnd: t + 4 },
  };
}

describe('LocalExecutor', () => {
  it('materialises the inputs, runs the command, uploads the declared outputs and removes the exec root', async () => {
    const blobs = new MemoryBlobStore();
    const dir = await tempDir();
    const cache = await LocalContentCache.open({ root: join(dir, 'cache'), maxBytes: 1 << 20, remote: blobs });
    const runner = new FakeRunner();
    const local = new LocalExecutor({ workerName: 'w1', blobs, cache, runnerFor: () => runner, execDir: dir, config, logger: silentLogger, variationSupport: {} });
    const loaded = await loadedAction(blobs);
    const run = await local.run({ ctx: jobContext(job()), loaded });
    assert.equal(run.cacheable, true);
    assert.equal(run.verdict.label, 'success');
    const out = run.result.output_files?.[0];
    assert.equal(out?.path, 'out.txt');
    assert.equal((await readBlob(blobs, out!.digest as Digest)).toString(), 'input text\nsuffix');
    assert.equal((await readBlob(blobs, run.result.stdout_digest as Digest)).toString(), 'made it\n');
    assert.equal(run.result.execution_metadata?.worker, 'w1');
    assert.deepEqual(runner.specs[0]?.argv, ['gen', 'suffix']);
    assert.deepEqual((await readdir(dir)).sort(), ['cache'], 'the exec root is gone');
  });
});

describe('MetricsExecutor', () => {
  it('counts each run by outcome, and the queue wait only for the first run of a job', async () => {
    const blobs = new MemoryBlobStore();
    const metrics = new Metrics();
    const runs = new MetricsExecutor(new ScriptedRuns([await runWithOutput(blobs, 'a'), await runWithOutput(blobs, 'a')]), metrics);
    const ctx = jobContext(job());
    const loaded = await loadedAction(blobs);
    await runs.run({ ctx, loaded });
    await runs.run({ ctx, loaded, variation: { variation: {}, copyInputs: false, shuffleDirectories: false, described: [] } });
    const json = await metrics.registry.getMetricsAsJSON();
    const executed = json.find((m) => m.name === 'reapi_actions_executed_total')!.values.find((v) => v.labels.outcome === 'success');
    assert.equal(executed?.value, 2);
    const stages = json.find((m) => m.name === 'reapi_execution_stage_duration_seconds')!.values;
    const count = (stage: string) => stages.find((v) => v.labels.stage === stage && (v as { metricName?: string }).metricName?.endsWith('_count'))?.value;
    assert.equal(count('queued'), 1);
    assert.equal(count('execution'), 2);
  });
});

describe('SingleRunExecutor', () => {
  it('never calls a doNotCache job or Action cacheable', async () => {
    const blobs = new MemoryBlobStore();
    const log = silentLogger;
    const cacheable = async (spec: JobSpec, actionSays: boolean) =>
      (await new SingleRunExecutor(new ScriptedRuns([await runWithOutput(blobs, 'x')])).execute({ ctx: jobContext(spec), loaded: await loadedAction(blobs, actionSays), log })).cacheable;
    assert.equal(await cacheable(job(), false), true);
    assert.equal(await cacheable(job({ doNotCache: true }), false), false);
    assert.equal(await cacheable(job(), true), false);
  });
});

describe('VerifyingExecutor', () => {
  async function verify(first: Run, second: Run, spec = job({ verify: true })) {
    const blobs = new MemoryBlobStore();
    const reports = new MemoryReportStore();
    const feedback = new MemoryFeedbackStore();
    const metrics = new Metrics();
    const runs = new ScriptedRuns([first, second]);
    const verifier = new Verifier({ workerName: 'w1', blobs, metrics, reports, feedback });
    const executor = new VerifyingExecutor(new SingleRunExecutor(runs), { runs, verifier, feedback, metrics, config, variationSupport: {}, workerName: 'w1' });
    const out = await executor.execute({ ctx: jobContext(spec), loaded: await loadedAction(blobs), log: silentLogger });
    return { out, runs, reports: await reports.list(), feedback: await feedback.mnemonic('Gen') };
  }

  it('runs a second time under variations and keeps agreeing results cacheable and verified', async () => {
    const blobs = new MemoryBlobStore();
    const { out, runs, reports, feedback } = await verify(await runWithOutput(blobs, 'same'), await runWithOutput(blobs, 'same'));
    assert.equal(out.cacheable, true);
    assert.equal(out.verified, true);
    assert.equal(runs.requests.length, 2);
    assert.ok(runs.requests[1]!.variation, 'the second run is varied');
    assert.deepEqual(reports, []);
    assert.deepEqual(feedback, { executions: 1, nondeterministic: 0, served: 0 });
  });

  it('keeps disagreeing results out of the cache and reports them; a job not marked verify runs once', async () => {
    const blobs = new MemoryBlobStore();
    const { out, reports, feedback } = await verify(await runWithOutput(blobs, 'one'), await runWithOutput(blobs, 'two'));
    assert.equal(out.cacheable, false);
    assert.match(out.message, /nondeterministic action, result not cached/);
    assert.equal(reports.length, 1);
    assert.equal(reports[0]?.differences[0]?.what, 'out.txt');
    assert.deepEqual(feedback, { executions: 1, nondeterministic: 1, served: 0 });
    const plain = await verify(await runWithOutput(blobs, 'one'), await runWithOutput(blobs, 'two'), job());
    assert.equal(plain.runs.requests.length, 1);
    assert.equal(plain.out.cacheable, true);
  });
});

describe('CachingExecutor', () => {
  const fixed = (out: Partial<ActionOutcome>, run: Run): ActionExecutor => ({
    execute: async () => ({ run, status: 0, message: '', cacheable: false, verified: false, ...out }),
  });

  it('writes a cacheable result with the worker\u2019s provenance, nothing otherwise, and applies an audit\u2019s decision before its follow-up', async () => {
    const blobs = new MemoryBlobStore();
    const run = await runWithOutput(blobs, 'r');
    const ac = new MemoryActionCache();
    const spec = job({ requestMetadata: { toolInvocationId: 'inv' } });
    const req = { ctx: jobContext(spec), loaded: await loadedAction(blobs), log: silentLogger };
    await new CachingExecutor(fixed({ cacheable: false }, run), ac, 'w1').execute(req);
    assert.equal(await ac.get('main', spec.actionDigest), undefined);
    await new CachingExecutor(fixed({ cacheable: true, verified: true }, run), ac, 'w1').execute(req);
    const p = provenanceOf((await ac.get('main', spec.actionDigest))!);
    assert.deepEqual([p.source, p.worker, p.verified, p.tool_invocation_id], ['worker', 'w1', true, 'inv']);
    let seenAfterRemoval: unknown = 'not called';
    await new CachingExecutor(fixed({ cacheUpdate: { kind: 'remove' }, afterCaching: async () => void (seenAfterRemoval = await ac.get('main', spec.actionDigest)) }, run), ac, 'w1').execute(req);
    assert.equal(seenAfterRemoval, undefined, 'the follow-up sees the entry gone');
  });
});
