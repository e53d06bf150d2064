// The persistent expander over its real Unix socket, against `reapi serve`: expansions from
// memory, from the ActionCache (under the key `reapi expand` and the workers use, so a fleet's
// expansion is a hit here and the other way round), or made here; hostile modules get their
// error and the expander keeps serving; malformed requests are refused.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startExpander, type RunningExpander } from '../../clients/expander/expander-server.ts';
import { expand } from '../../clients/expand-client.ts';
import { InProcessExpander } from '../../execution/wasm/in-process-expander.ts';
import { op, packed, stringMacro } from '../support/wasm-module.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';
import { sandboxSkip } from '../support/sandbox.ts';

/** Returns its input: the simplest macro. */
const echo = stringMacro('derive_echo', [...op.localGet(0), ...op.i64ExtendI32U, ...op.localGet(1), ...op.i64ExtendI32U, ...op.i64Const(32), ...op.i64Shl, ...op.i64Or]);
const hostile = {
  loop: stringMacro('derive_x', [...op.loop, ...op.br(0), ...op.end, ...op.unreachable]),
  memory: stringMacro('derive_x', [...op.loop, ...op.i32Const(16), ...op.memoryGrow, ...op.i32Const(-1), ...op.i32Eq, ...op.if, ...op.unreachable, ...op.end, ...op.br(0), ...op.end, ...op.unreachable]),
  trap: stringMacro('derive_x', [...op.unreachable]),
  outOfBounds: stringMacro('derive_x', [...packed(0xffffff00, 100)]),
  notWasm: Buffer.from('not a wasm module at all'),
};

/** A client of the wire format: one connection, requests one after another. */
class ShimClient {
  private buf = Buffer.alloc(0);
  private waiting?: () => void;
  closed = false;
  constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiting?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.waiting?.();
    });
  }
  static open(path: string): Promise<ShimClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new ShimClient(s)));
      s.once('error', reject);
    });
  }
  send(raw: Buffer | string): void {
    this.sock.write(raw);
  }
  async expand(module: string, entry: string, input: string, attr?: string): Promise<{ kind: string; text: string }> {
    const path = Buffer.from(module);
    const i = Buffer.from(input);
    const a = attr === undefined ? undefined : Buffer.from(attr);
    this.send(Buffer.concat([Buffer.from(`expand ${entry} ${path.length} ${i.length} ${a ? a.length : -1}\n`), path, i, ...(a ? [a] : [])]));
    return this.answer();
  }
  async answer(): Promise<{ kind: string; text: string }> {
    for (;;) {
      const nl = this.buf.indexOf(0x0a);
      if (nl >= 0) {
        const [kind, len] = this.buf.subarray(0, nl).toString().split(' ');
        const end = nl + 1 + Number(len);
        if (this.buf.length >= end) {
          const text = this.buf.subarray(nl + 1, end).toString();
          this.buf = this.buf.subarray(end);
          return { kind: kind!, text };
        }
      }
      if (this.closed) throw new Error('connection closed');
      await new Promise<void>((r) => (this.waiting = r));
      this.waiting = undefined;
    }
  }
  close(): void {
    this.sock.destroy();
  }
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
    for (const [name, bytes] of Object.entries({ echo, ...hostile })) {
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
    const c = await ShimClient.open(a.socket);
    const input = `struct S${Date.now()} { a: u8 }`;
    assert.deepEqual(await c.expand(modules.echo!, 'derive_echo', input), { kind: 'ok', text: input });
    assert.deepEqual(await c.expand(modules.echo!, 'derive_echo', input), { kind: 'ok', text: input });
    assert.equal(a.stats.expanded, 1);
    assert.equal(a.stats.memoryHits, 1);
    c.close();
    // Closing waits for the write to the ActionCache; another expander (a new build) then hits.
    await a.close();
    running.splice(running.indexOf(a), 1);
    const b = await start('b');
    const d = await ShimClient.open(b.socket);
    assert.deepEqual(await d.expand(modules.echo!, 'derive_echo', input), { kind: 'ok', text: input });
    assert.equal(b.stats.cacheHits, 1, JSON.stringify(b.stats));
    d.close();
  });

  test('an expansion the fleet made is a hit here: the same action key as reapi expand', async () => {
    const input = `enum E${Date.now()} { A, B }`;
    const fleet = await expand(s.c, { module: echo, entry: 'derive_echo', input: Buffer.from(input), platform: { ISA: 'x86-64' } });
    assert.equal(fleet.cached, false);
    const e = await start('c');
    const c = await ShimClient.open(e.socket);
    assert.deepEqual(await c.expand(modules.echo!, 'derive_echo', input), { kind: 'ok', text: input });
    assert.equal(e.stats.cacheHits, 1);
    assert.equal(e.stats.expanded, 0);
    c.close();
  });

  test('hostile modules get their error and the expander keeps serving', async () => {
    const e = await start('hostile', 2);
    const c = await ShimClient.open(e.socket);
    const cases: Array<[string, RegExp]> = [
      ['loop', /did not finish within/],
      ['memory', /memory/i],
      ['trap', /panicked/],
      ['outOfBounds', /./],
      ['notWasm', /module rejected/],
    ];
    for (const [name, why] of cases) {
      const r = await c.expand(modules[name]!, 'derive_x', 'struct X;');
      assert.equal(r.kind, 'error', `${name}: ${r.text}`);
      assert.match(r.text, why, name);
      // ... and a good expansion right after, on the same connection.
      const ok = await c.expand(modules.echo!, 'derive_echo', `struct After${name};`);
      assert.deepEqual(ok, { kind: 'ok', text: `struct After${name};` });
    }
    const missing = await c.expand(join(dir, 'nope.wasm'), 'derive_x', 'x');
    assert.equal(missing.kind, 'error');
    assert.match(missing.text, /cannot read the module/);
    c.close();
  });

  test('a malformed request is refused and the connection closed; others are unaffected', async () => {
    const e = await start('malformed');
    const bad = await ShimClient.open(e.socket);
    bad.send('GET / HTTP/1.1\n');
    const r = await bad.answer();
    assert.equal(r.kind, 'error');
    assert.match(r.text, /malformed request/);
    const good = await ShimClient.open(e.socket);
    assert.deepEqual(await good.expand(modules.echo!, 'derive_echo', 'struct Fine;'), { kind: 'ok', text: 'struct Fine;' });
    good.close();
    const huge = await ShimClient.open(e.socket);
    huge.send(`expand derive_echo 10 ${1024 ** 3} -1\n`);
    assert.match((await huge.answer()).text, /too large/);
  });
});
