// Which executed actions are run twice (verification) and which served cache hits are re-run in
// the background (audits). Sampling is weighted by blast radius: entries served often, mnemonics
// with a history of nondeterminism, and entries nobody verified (or that a client wrote) come
// first, while the overall fractions stay near --verify-rate and --audit-rate.
import { digestKey, type Digest } from '../common/digest.ts';
import type { FeedbackStore } from '../execution/feedback.ts';

export interface EntryProvenance {
  source: 'worker' | 'client' | 'unknown';
  verified: boolean;
}

export interface AuditCandidate {
  instanceName: string;
  actionDigest: Digest;
  mnemonic: string;
  priority: number;
}

/** Served entries remembered as audit candidates. */
const MAX_CANDIDATES = 10_000;
/** An entry audited recently is not audited again for this long. */
const REAUDIT_AFTER_MS = 60 * 60 * 1000;

export class VerificationPolicy {
  private meanWeight = 1;
  private auditTokens = 0;
  private readonly candidates = new Map<string, AuditCandidate>();
  private readonly audited = new Map<string, number>();

  constructor(
    private readonly feedback: FeedbackStore,
    readonly verifyRate: number,
    readonly auditRate: number,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * Blast radius of a mnemonic: entries of kinds that are served often, or that were caught being
   * nondeterministic before, do the most harm when wrong.
   */
  async weight(mnemonic: string): Promise<number> {
    const s = await this.feedback.mnemonic(mnemonic);
    const nondeterminismRate = s.executions > 0 ? s.nondeterministic / s.executions : 0;
    const servedPerExecution = s.executions > 0 ? s.served / s.executions : 0;
    return 1 + 10 * nondeterminismRate + Math.log2(1 + servedPerExecution);
  }

  /** Whether this execution runs twice before its result may be cached. */
  async shouldVerify(mnemonic: string): Promise<boolean> {
    if (this.verifyRate <= 0) return false;
    if (this.verifyRate >= 1) return true;
    const w = await this.weight(mnemonic);
    // A running mean keeps the overall fraction near the rate while heavier kinds get more.
    this.meanWeight = 0.99 * this.meanWeight + 0.01 * w;
    return this.random() < Math.min(1, (this.verifyRate * w) / this.meanWeight);
  }

  /**
   * A cache hit was served; returns the entry to audit now, if the audit budget allows one. The
   * budget grows by --audit-rate per hit and is spent on the highest-priority entry served.
   */
  async onServed(instanceName: string, actionDigest: Digest, mnemonic: string, provenance: EntryProvenance): Promise<AuditCandidate | undefined> {
    await this.feedback.recordServed(instanceName, actionDigest, mnemonic);
    if (this.auditRate <= 0) return undefined;
    const key = `${instanceName}\0${digestKey(actionDigest)}`;
    const served = await this.feedback.servedCount(instanceName, actionDigest);
    const trust = provenance.source === 'client' ? 5 : provenance.verified ? 1 : 3;
    const priority = served * trust * (await this.weight(mnemonic));
    this.candidates.delete(key);
    this.candidates.set(key, { instanceName, actionDigest, mnemonic, priority });
    if (this.candidates.size > MAX_CANDIDATES) this.candidates.delete(this.candidates.keys().next().value!);

    this.auditTokens = Math.min(this.auditTokens + this.auditRate, 100);
    if (this.auditTokens < 1) return undefined;
    const now = Date.now();
    let best: [string, AuditCandidate] | undefined;
    for (const entry of this.candidates) {
      if (now - (this.audited.get(entry[0]) ?? 0) < REAUDIT_AFTER_MS) continue;
      if (!best || entry[1].priority > best[1].priority) best = entry;
    }
    if (!best) return undefined;
    this.auditTokens -= 1;
    this.candidates.delete(best[0]);
    this.audited.set(best[0], now);
    if (this.audited.size > MAX_CANDIDATES) this.audited.delete(this.audited.keys().next().value!);
    return best[1];
  }
}
