// The persistent expander over its real Unix socket, against `reapi serve`: expansions from
// memory, from the ActionCache (under the key `reapi expand` and the workers use, so a fleet's
// expansion is a hit here and the other way round), or made here; hostile modules get their
// error and the expander keeps serving; malformed requests are refused.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ExpanderClient } from '../../clients/expander/expander-client.ts';
import { startExpander, type RunningExpander } from '../../clients/expander/expander-server.ts';
import { expand } from '../../clients/expand-client.ts';
import { InProcessExpander } from '../../execution/wasm/in-process-expander.ts';
import { op, packed, stringMacro } from '../support/wasm-module.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';
import { sandboxSkip } from '../support/sandbox.ts';

/** Returns its input: the simplest macro. */
const echo = stringMacro('derive_echo', [...op.localGet(0), ...op.i64ExtendI32U, ...op.localGet(1), ...op.i64ExtendI32U, ...op.i64Const(32), ...op.i64Shl, ...op.i64Or]);
/** The same, after spinning ~10^8 iterations: slower to expand than a round trip to the cache. */
const SPIN = 3;
const slowEcho = stringMacro(
  'derive_echo',
  [...op.i32Const(100_000_000), ...op.call(SPIN), ...op.localGet(0), ...op.i64ExtendI32U, ...op.localGet(1), ...op.i64ExtendI32U, ...op.i64Const(32), ...op.i64Shl, ...op.i64Or],
  { funcs: [{ params: ['i32'], results: [], body: [...op.loop, ...op.localGet(0), ...op.i32Const(-1), ...op.i32Add, ...op.localSet(0), ...op.localGet(0), ...op.brIf(0), ...op.end] }] },
);
const hostile = {
  loop: stringMacro('derive_x', [...op.loop, ...op.br(0), ...op.end, ...op.unreachable]),
  memory: stringMacro('derive_x', [...op.loop, ...op.i32Const(16), ...op.memoryGrow, ...op.i32Const(-1), ...op.i32Eq, ...op.if, ...op.unreachable, ...op.end, ...op.br(0), ...op.end, ...op.unreachable]),
  trap: stringMacro('derive_x', [...op.unreachable]),
  outOfBounds: stringMacro('derive_x', [...packed(0xffffff00, 100)]),
  notWasm: Buffer.from('not a wasm module at all'),
};

/** `{kind, text}` of an answer: what the shim sees. */
async function ask(c: ExpanderClient, module: string, entry: string, input: string): Promise<{ kind: string; text: string }> {
  const a = await c.expand(module, entry, input);
  return a.ok ? { kind: 'ok', text: a.output } : { kind: 'error', text: a.message };
}

describe('the persistent expander', { skip: sandboxSkip }, () => {
  let s: TestServe;
  let dir: string;
  let wasm: InProcessExpander;
  const running: RunningExpander[] = [];
  const modules: Record<string, string> = {};

  before(async () => {
    s = await startTestServe({}, { name: 'expander', instance: '' });
    dir = await mkdtemp(join(tmpdir(), 'reapi-expander-test-'));
    for (const [name, bytes] of Object.entries({ echo, slowEcho, ...hostile })) {
      modules[name] = join(dir, `${name}.wasm`);
      await writeFile(modules[name]!, bytes);
    }
    wasm = new InProcessExpander({ threads: 2, maxMemoryBytes: 64 * 1024 * 1024 });
  });
  after(async () => {
    for (const r of running) await r.close();
    await wasm?.close();
    await s?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const start = async (name: string, timeoutSeconds = 30) => {
    const r = await startExpander({ socket: join(dir, `${name}.sock`), expander: wasm, clients: s.c, platform: { ISA: 'x86-64' }, timeoutSeconds });
    running.push(r);
    return r;
  };

  test('expands here on a miss, from memory after, and shares through the ActionCache', async () => {
    const a = await start('a');
    const c = await ExpanderClient.connect(a.socket);
    const input = `struct S${Date.now()} { a: u8 }`;
    assert.deepEqual(await ask(c, modules.slowEcho!, 'derive_echo', input), { kind: 'ok', text: input });
    assert.deepEqual(await ask(c, modules.slowEcho!, 'derive_echo', input), { kind: 'ok', text: input });
    assert.equal(a.stats.expanded, 1);
    assert.equal(a.stats.memoryHits, 1);
    c.close();
    // Closing waits for the write to the ActionCache; another expander (a new build) then hits.
    await a.close();
    running.splice(running.indexOf(a), 1);
    const b = await start('b');
    const d = await ExpanderClient.connect(b.socket);
    // The cache answers before the (slow) local expansion.
    assert.deepEqual(await ask(d, modules.slowEcho!, 'derive_echo', input), { kind: 'ok', text: input });
    assert.equal(b.stats.cacheHits, 1, JSON.stringify(b.stats));
    d.close();
  });

  test('an expansion the fleet made is a hit here: the same action key as reapi expand', async () => {
    const input = `enum E${Date.now()} { A, B }`;
    const fleet = await expand(s.c, { module: slowEcho, entry: 'derive_echo', input: Buffer.from(input), platform: { ISA: 'x86-64' } });
    assert.equal(fleet.cached, false);
    const e = await start('c');
    const c = await ExpanderClient.connect(e.socket);
    assert.deepEqual(await ask(c, modules.slowEcho!, 'derive_echo', input), { kind: 'ok', text: input });
    assert.equal(e.stats.cacheHits, 1, JSON.stringify(e.stats));
    c.close();
  });

  test('hostile modules get their error and the expander keeps serving', async () => {
    const e = await start('hostile', 2);
    const c = await ExpanderClient.connect(e.socket);
    const cases: Array<[string, RegExp]> = [
      ['loop', /did not finish within/],
      ['memory', /memory/i],
      ['trap', /panicked/],
      ['outOfBounds', /./],
      ['notWasm', /module rejected/],
    ];
    for (const [name, why] of cases) {
      const r = await ask(c, modules[name]!, 'derive_x', 'struct X;');
      assert.equal(r.kind, 'error', `${name}: ${r.text}`);
      assert.match(r.text, why, name);
      // ... and a good expansion right after, on the same connection.
      const ok = await ask(c, modules.echo!, 'derive_echo', `struct After${name};`);
      assert.deepEqual(ok, { kind: 'ok', text: `struct After${name};` });
    }
    const missing = await ask(c, join(dir, 'nope.wasm'), 'derive_x', 'x');
    assert.equal(missing.kind, 'error');
    assert.match(missing.text, /cannot read the module/);
    c.close();
  });

  test('a malformed request is refused and the connection closed; others are unaffected', async () => {
    const e = await start('malformed');
    const bad = await ExpanderClient.connect(e.socket);
    bad.sendRaw('GET / HTTP/1.1\n');
    const r = await bad.answer();
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.message, /malformed request/);
    const good = await ExpanderClient.connect(e.socket);
    assert.deepEqual(await ask(good, modules.echo!, 'derive_echo', 'struct Fine;'), { kind: 'ok', text: 'struct Fine;' });
    good.close();
    const huge = await ExpanderClient.connect(e.socket);
    huge.sendRaw(`expand derive_echo 10 ${1024 ** 3} -1\n`);
    const big = await huge.answer();
    assert.match(big.ok ? '' : big.message, /too large/);
  });
});
