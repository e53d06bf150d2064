// Routing by locality in a fleet of real processes: redis-server, `reapi cas`, `reapi scheduler`
// and two `reapi worker`s (concurrency 1, separate work dirs). Actions sharing an input tree run
// on the worker that already fetched it, which then fetches nothing from the CAS (the
// ResourceUsage in ExecutedActionMetadata.auxiliary_metadata says how many bytes it fetched).
// Needs redis-server, bwrap and root (the workers' sandbox).
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { unpackAny } from '../../protos/index.ts';
import { execute, uploadAction, type ActionResult, type ExecClients, type TreeSpec } from '../support/execution.ts';
import { startFleet, type Fleet } from '../support/fleet.ts';
import { redisSkip } from '../support/redis.ts';
import { sandboxSkip } from '../support/sandbox.ts';

const skip = redisSkip || sandboxSkip;

/** Bytes the worker fetched from the CAS for this execution. */
function fetchedBytes(r: ActionResult): number {
  for (const any of r.execution_metadata?.auxiliary_metadata ?? []) {
    if (any.type_url.endsWith('/reapi.v1.ResourceUsage')) return Number(unpackAny(any, 'ResourceUsage').input_fetched_bytes);
  }
  throw new Error('no ResourceUsage in the result');
}

describe('locality in a fleet (redis, cas, scheduler, 2 workers)', { skip }, () => {
  let fleet: Fleet;
  let c: ExecClients;

  before(async () => {
    fleet = await startFleet({ name: 'reapi-loc' });
    c = fleet.c;
  });

  after(async () => {
    await fleet?.stop();
  });

  const inputs: TreeSpec = { pkg: Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`f${i}`, randomBytes(128 * 1024)])) };
  const bytes = 8 * 128 * 1024;

  async function runIndexed(i: number): Promise<ActionResult> {
    const action = await uploadAction(c, { argv: ['/bin/sh', '-c', `cat pkg/* | sha256sum; echo ${i}`], inputs });
    const outcome = await execute(c, action.actionDigest, { deadlineMs: 60_000 });
    assert.equal(outcome.response.status?.code ?? 0, 0, outcome.response.status?.message);
    const r = outcome.response.result!;
    assert.equal(r.exit_code, 0);
    return r;
  }

  it('runs actions sharing an input tree on the worker that fetched it, which fetches nothing again', async () => {
    const first = await runIndexed(0);
    const owner = first.execution_metadata?.worker;
    assert.ok(owner);
    assert.ok(fetchedBytes(first) >= bytes, `the first run fetched the inputs (${fetchedBytes(first)} bytes)`);
    for (let i = 1; i <= 6; i++) {
      const r = await runIndexed(i);
      assert.equal(r.execution_metadata?.worker, owner, `action ${i} ran where its inputs are`);
      assert.equal(fetchedBytes(r), 0, `action ${i} fetched nothing`);
    }
  });

  it('spreads a burst over both workers when the preferred one is saturated', async () => {
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => runIndexed(100 + i)));
    const workers = new Set(results.map((r) => r.execution_metadata?.worker));
    assert.equal(workers.size, 2, 'overflow went to the shared queue and the other worker');
  });
});
