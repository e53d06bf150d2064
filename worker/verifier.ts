// Double execution and audits: compare two runs of one action, and an execution with the
// ActionCache entry it should reproduce. Disagreement keeps the result out of the cache (or has
// the entry removed), counts it, and leaves a report with both results stored in the CAS.
import { randomUUID } from 'node:crypto';
import { putBlob, readBlob } from '../cas/blob-io.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import { withProvenance } from '../cas/provenance.ts';
import { digestKey } from '../common/digest.ts';
import type { Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import { decode, encode, type MessageInput } from '../protos/index.ts';
import type { FeedbackStore } from '../execution/feedback.ts';
import type { JobSpec } from '../execution/job-queue.ts';
import type { Difference, Report, ReportStore } from '../execution/report-store.ts';
import { compareResults } from './result-comparison.ts';
import type { CacheUpdate } from './executors/types.ts';

interface VerifierDeps {
  workerName: string;
  blobs: BlobStore;
  metrics: Metrics;
  reports: ReportStore;
  feedback: FeedbackStore;
}

interface RunLike {
  result: MessageInput<'ActionResult'>;
  verdict: { label: string };
}

function summary(diffs: Difference[]): string {
  const first = diffs[0]!;
  return `${diffs.length} difference(s), first in ${first.what}: ${first.detail}`;
}

export class Verifier {
  constructor(private readonly deps: VerifierDeps) {}

  /** Compare the two runs of a verified action; on disagreement, count and report it. */
  async compare(job: JobSpec, first: RunLike, second: RunLike, varied: string[], log: Logger): Promise<{ agreed: boolean; message: string }> {
    const { metrics, feedback } = this.deps;
    const mnemonic = job.requestMetadata?.mnemonic ?? '';
    const diffs = await compareResults(this.deps.blobs, first.result, second.result);
    await feedback.recordExecuted(mnemonic, diffs.length > 0);
    if (diffs.length === 0) {
      metrics.verifications.inc({ result: 'agreed' });
      return { agreed: true, message: '' };
    }
    metrics.verifications.inc({ result: 'differed' });
    metrics.nondeterministicActions.inc({ mnemonic: metrics.labels.mnemonic.of(mnemonic) });
    const report = await this.report('nondeterministic', job, [first.result, second.result], diffs, varied);
    const target = job.requestMetadata?.target ?? '(unknown target)';
    log.warn({ target, mnemonic, report: report.id, differences: diffs.slice(0, 5) }, `nondeterministic action ${target}: not cached`);
    return {
      agreed: false,
      message:
        `reapi: nondeterministic action, result not cached: two runs disagreed (${summary(diffs)}); ` +
        `the second run varied ${varied.join(', ')}; report ${report.id}`,
    };
  }

  /**
   * Check an ActionCache entry against a fresh execution (job.audit is set). Returns what the
   * cache should get (the caching layer writes it) and what to record once it has: metrics, log
   * and report come after the cache changed, so whoever sees them sees the cache as they say.
   */
  async audit(job: JobSpec, run: RunLike, log: Logger): Promise<{ update?: CacheUpdate; record: () => Promise<void> }> {
    const { metrics, blobs } = this.deps;
    const audit = job.audit!;
    const mnemonic = job.requestMetadata?.mnemonic ?? '';
    if (run.verdict.label !== 'success' && run.verdict.label !== 'nonzero-exit') {
      return {
        record: async () => {
          metrics.audits.inc({ result: 'failed' });
          log.warn({ outcome: run.verdict.label }, 'audit inconclusive: the re-execution did not finish');
        },
      };
    }
    const entry = decode('ActionResult', await readBlob(blobs, audit.entry));
    const diffs = await compareResults(blobs, entry, run.result);
    if (diffs.length === 0) {
      // A quarantined client write that a worker reproduced: now it may be served.
      const promote = audit.reason === 'client-write';
      return {
        ...(promote ? { update: { kind: 'store' as const, entry: withProvenance(entry, { source: 'client', verified: true }) } } : {}),
        record: async () => {
          metrics.audits.inc({ result: 'confirmed' });
          if (promote) log.info('quarantined client write confirmed by execution; now served');
        },
      };
    }
    return {
      ...(audit.reason === 'served' ? { update: { kind: 'remove' as const } } : {}),
      record: async () => {
        metrics.audits.inc({ result: 'contradicted' });
        metrics.cachePoisoningSuspected.inc({ mnemonic: metrics.labels.mnemonic.of(mnemonic) });
        const report = await this.report('cache-poisoning', job, [entry, run.result], diffs, ['re-execution with the verification variations']);
        log.error(
          { target: job.requestMetadata?.target, mnemonic, report: report.id, reason: audit.reason, differences: diffs.slice(0, 5) },
          `cache entry for ${digestKey(job.actionDigest)} contradicted by a new execution (${summary(diffs)}); ` +
            (audit.reason === 'served' ? 'removed from the cache' : 'the client write is discarded'),
        );
      },
    };
  }

  private async report(
    kind: Report['kind'],
    job: JobSpec,
    results: [MessageInput<'ActionResult'>, MessageInput<'ActionResult'>],
    differences: Difference[],
    variation: string[],
  ): Promise<Report> {
    const stored = await Promise.all(results.map((r) => putBlob(this.deps.blobs, encode('ActionResult', r))));
    const meta = job.requestMetadata ?? {};
    const report: Report = {
      id: randomUUID(),
      kind,
      createdAt: new Date().toISOString(),
      instanceName: job.instanceName,
      actionDigest: job.actionDigest,
      ...(meta.target ? { target: meta.target } : {}),
      ...(meta.mnemonic ? { mnemonic: meta.mnemonic } : {}),
      ...(meta.toolInvocationId ? { toolInvocationId: meta.toolInvocationId } : {}),
      workers: results.map((r) => r.execution_metadata?.worker ?? this.deps.workerName),
      variation,
      differences,
      results: stored,
    };
    await this.deps.reports.add(report);
    return report;
  }
}
