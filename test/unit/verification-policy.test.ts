// Verification and audit order follow the cache-hit feedback: nondeterminism-prone mnemonics are
// verified more often, and audits take the most-served (and least trusted) entries first.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { digestOf } from '../../common/digest.ts';
import { MemoryFeedbackStore } from '../../execution/feedback.ts';
import { VerificationPolicy } from '../../scheduler/verification-policy.ts';

/** A deterministic stand-in for Math.random: an evenly spread sequence in [0, 1). */
function sequence(): () => number {
  let i = 0;
  return () => ((i++ * 0.6180339887) % 1);
}

describe('VerificationPolicy', () => {
  it('verifies a mnemonic with a history of nondeterminism more often, keeping the overall rate', async () => {
    const feedback = new MemoryFeedbackStore();
    for (let i = 0; i < 20; i++) {
      await feedback.recordExecuted('Genrule', i % 4 === 0); // 25% nondeterministic
      await feedback.recordExecuted('CppCompile', false);
    }
    const policy = new VerificationPolicy(feedback, 0.1, 0, sequence());
    let genrule = 0;
    let compile = 0;
    for (let i = 0; i < 2000; i++) {
      if (await policy.shouldVerify('Genrule')) genrule++;
      if (await policy.shouldVerify('CppCompile')) compile++;
    }
    assert.ok(genrule > 2 * compile, `Genrule verified ${genrule} times, CppCompile ${compile}`);
    const overall = (genrule + compile) / 4000;
    assert.ok(overall > 0.07 && overall < 0.2, `overall verified fraction ${overall}`);
  });

  it('verifies everything at rate 1 and nothing at rate 0', async () => {
    const feedback = new MemoryFeedbackStore();
    assert.equal(await new VerificationPolicy(feedback, 1, 0).shouldVerify('X'), true);
    assert.equal(await new VerificationPolicy(feedback, 0, 0).shouldVerify('X'), false);
  });

  it('audits the most-served entry first, and client-written or unverified entries before verified ones', async () => {
    const feedback = new MemoryFeedbackStore();
    const policy = new VerificationPolicy(feedback, 0, 0.25);
    const popular = digestOf(Buffer.from('popular'));
    const rare = digestOf(Buffer.from('rare'));
    const picks: string[] = [];
    for (let i = 0; i < 12; i++) {
      const pick = await policy.onServed('main', popular, 'CppCompile', { source: 'worker', verified: true });
      if (pick) picks.push(pick.actionDigest.hash);
      if (i % 4 === 0) {
        const p2 = await policy.onServed('main', rare, 'CppCompile', { source: 'worker', verified: true });
        if (p2) picks.push(p2.actionDigest.hash);
      }
    }
    assert.equal(picks[0], popular.hash, 'the entry served most is audited first');
    assert.equal(await feedback.servedCount('main', popular), 12);

    const trusted = digestOf(Buffer.from('verified by a worker'));
    const client = digestOf(Buffer.from('written by a client'));
    const p = new VerificationPolicy(new MemoryFeedbackStore(), 0, 0.5);
    await p.onServed('main', trusted, 'Javac', { source: 'worker', verified: true });
    const pick = await p.onServed('main', client, 'Javac', { source: 'client', verified: false });
    assert.equal(pick?.actionDigest.hash, client.hash, 'a client-written entry outranks a verified one served as often');
  });

  it('spends about auditRate audits per served hit', async () => {
    const feedback = new MemoryFeedbackStore();
    const policy = new VerificationPolicy(feedback, 0, 0.1);
    let audits = 0;
    for (let i = 0; i < 200; i++) {
      const d = digestOf(Buffer.from(`entry ${i}`));
      if (await policy.onServed('main', d, 'Genrule', { source: 'worker', verified: false })) audits++;
    }
    assert.ok(audits >= 18 && audits <= 21, `${audits} audits for 200 hits at rate 0.1`);
  });
});
