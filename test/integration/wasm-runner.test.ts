// The WasmRunner through a real server (`startServe`: gRPC, in-process queue, a local worker):
// expansions are cached by content; each expansion gets a fresh instance; hostile modules
// (endless loops, unbounded memory, host imports, traps, bad output, not wasm) each get a clear
// message, nothing of them is cached, and the worker keeps serving; watt-ABI macros run.
// Hostile modules are assembled byte by byte (test/support/wasm-module.ts). Needs root and bwrap
// (the worker's sandbox starts with the server; one test runs an ordinary action beside wasm ones).
// Run: node --import tsx --test test/integration/wasm-runner.test.ts
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { startServe } from '../../cli/roles.ts';
import { ExpandError, expand, prepareExpansion, type ExpandRequest } from '../../clients/expand-client.ts';
import { execute, lookupActionResult, outputFile, run, stderrOf, stdoutOf, uploadMissing, type ExecClients } from '../../clients/remote-execution.ts';
import { assemble, op, packed, stringAbiHelpers, stringMacro, type FuncDef, type ImportDef } from '../support/wasm-module.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';

const MiB = 1024 * 1024;
const MEMORY_CAP = 64 * MiB;

// ---------------------------------------------------------------------------------------------
// Modules

/** Echo: returns its input (ptr, len) unchanged. */
const echo = stringMacro('derive_echo', [...op.localGet(0), ...op.i64ExtendI32U, ...op.localGet(1), ...op.i64ExtendI32U, ...op.i64Const(32), ...op.i64Shl, ...op.i64Or]);

/** Counts its calls in memory and returns the count as one ASCII digit ('1' in a fresh instance). */
const counter = stringMacro('derive_count', [
  ...op.i32Const(100),
  ...op.i32Const(100),
  ...op.i32Load(),
  ...op.i32Const(1),
  ...op.i32Add,
  ...op.i32Store(),
  // memory[200] = '0' + count
  ...op.i32Const(200),
  ...op.i32Const(100),
  ...op.i32Load(),
  ...op.i32Const(48),
  ...op.i32Add,
  ...op.i32Store(),
  ...packed(200, 1),
]);

const hostile = {
  loop: stringMacro('derive_x', [...op.loop, ...op.br(0), ...op.end, ...op.unreachable]),
  // Grows 16 pages at a time; when growth fails (the cap), aborts like a Rust macro does.
  memory: stringMacro('derive_x', [...op.loop, ...op.i32Const(16), ...op.memoryGrow, ...op.i32Const(-1), ...op.i32Eq, ...op.if, ...op.unreachable, ...op.end, ...op.br(0), ...op.end, ...op.unreachable]),
  imports: assemble({
    imports: [{ module: 'env', name: 'now', params: [], results: ['i64'] }],
    memory: { min: 1 },
    funcs: [...stringAbiHelpers, { params: ['i32', 'i32'], results: ['i64'], export: 'derive_x', body: [...op.call(0)] }],
  }),
  trap: stringMacro('derive_x', [...op.unreachable]),
  outOfBounds: stringMacro('derive_x', [...packed(0xffffff00, 100)]),
  badUtf8: stringMacro('derive_x', [...packed(1024, 4)], { data: [{ offset: 1024, bytes: Uint8Array.from([0x61, 0xff, 0xfe, 0x62]) }] }),
  notWasm: Buffer.from('\x7fELF\x02\x01\x01\x00 this is a native binary, not a wasm module'),
  shared: stringMacro('derive_x', [...packed(0, 0)], { memory: { min: 1, max: 2, shared: true } }),
  twoMemories: stringMacro('derive_x', [...packed(0, 0)], { extraMemories: 1 }),
  // Recurses without end: the thread's fixed stack overflows.
  recursion: stringMacro('derive_x', [...op.localGet(0), ...op.localGet(1), ...op.call(2)]),
};

// A hand-made watt guest (the watt crate is not available offline): the host functions in the
// order of `wattImports` are functions 0..9.
const WATT_FUNCS = [
  ['token_stream_serialize', ['i32'], ['i32']],
  ['token_stream_deserialize', ['i32', 'i32'], ['i32']],
  ['token_stream_parse', ['i32', 'i32'], ['i32']],
  ['literal_to_string', ['i32'], ['i32']],
  ['string_new', ['i32', 'i32'], ['i32']],
  ['string_len', ['i32'], ['i32']],
  ['string_read', ['i32', 'i32'], []],
  ['bytes_len', ['i32'], ['i32']],
  ['bytes_read', ['i32', 'i32'], []],
  ['print_panic', ['i32'], []],
] as const;
const W = Object.fromEntries(WATT_FUNCS.map(([name], i) => [name, i])) as Record<(typeof WATT_FUNCS)[number][0], number>;
const RAW_TO_TOKEN_STREAM = 10;
const GENERATED = 'struct Generated ;';
const FROM_STRING = 'struct FromString { field : u8 }';

function wattGuest(version: 'watt-0.5' | 'watt-0.4'): Buffer {
  const imports: ImportDef[] = WATT_FUNCS.map(([name, params, results]) => ({ module: version, name, params: [...params], results: [...results] }));
  // Guest token streams are pointers to [len u32][wire bytes]; memory[0] is a bump pointer.
  const funcs: FuncDef[] = [
    {
      export: 'raw_to_token_stream', params: ['i32'], results: ['i32'], locals: 3,
      body: [
        ...op.localGet(0), ...op.call(W.token_stream_serialize), ...op.localSet(1),
        ...op.localGet(1), ...op.call(W.bytes_len), ...op.localSet(2),
        ...op.i32Const(0), ...op.i32Load(), ...op.localSet(3),
        ...op.localGet(3), ...op.localGet(2), ...op.i32Store(),
        ...op.localGet(1), ...op.localGet(3), ...op.i32Const(4), ...op.i32Add, ...op.call(W.bytes_read),
        ...op.i32Const(0), ...op.localGet(3), ...op.localGet(2), ...op.i32Add, ...op.i32Const(8), ...op.i32Add, ...op.i32Store(),
        ...op.localGet(3),
      ],
    },
    {
      export: 'token_stream_into_raw', params: ['i32'], results: ['i32'],
      body: [...op.localGet(0), ...op.i32Const(4), ...op.i32Add, ...op.localGet(0), ...op.i32Load(), ...op.call(W.token_stream_deserialize)],
    },
    // demo: the identity macro (tokens through the wire format and back).
    { export: 'demo', params: ['i32'], results: ['i32'], body: [...op.localGet(0)] },
    // parsed: ignores its input, returns the tokens of a constant string (token_stream_parse).
    { export: 'parsed', params: ['i32'], results: ['i32'], body: [...op.i32Const(2048), ...op.i32Const(GENERATED.length), ...op.call(W.token_stream_parse), ...op.call(RAW_TO_TOKEN_STREAM)] },
    // panics: print_panic("boom").
    { export: 'panics', params: ['i32'], results: ['i32'], body: [...op.i32Const(3072), ...op.i32Const(4), ...op.call(W.string_new), ...op.call(W.print_panic), ...op.unreachable] },
    // lit: the input is one literal; returns its text re-parsed (literal_to_string, string_len/read).
    {
      export: 'lit', params: ['i32'], results: ['i32'], locals: 2,
      body: [
        ...op.localGet(0), ...op.i32Load(10), ...op.call(W.literal_to_string), ...op.localSet(1),
        ...op.localGet(1), ...op.call(W.string_len), ...op.localSet(2),
        ...op.localGet(1), ...op.i32Const(4096), ...op.call(W.string_read),
        ...op.i32Const(4096), ...op.localGet(2), ...op.call(W.token_stream_parse), ...op.call(RAW_TO_TOKEN_STREAM),
      ],
    },
    // from_string: string_new of a constant, read back, parsed.
    {
      export: 'from_string', params: ['i32'], results: ['i32'], locals: 2,
      body: [
        ...op.i32Const(5120), ...op.i32Const(FROM_STRING.length), ...op.call(W.string_new), ...op.localSet(1),
        ...op.localGet(1), ...op.call(W.string_len), ...op.localSet(2),
        ...op.localGet(1), ...op.i32Const(6144), ...op.call(W.string_read),
        ...op.i32Const(6144), ...op.localGet(2), ...op.call(W.token_stream_parse), ...op.call(RAW_TO_TOKEN_STREAM),
      ],
    },
    // second: an attribute macro returning its item.
    { export: 'second', params: ['i32', 'i32'], results: ['i32'], body: [...op.localGet(1)] },
  ];
  return assemble({
    imports,
    memory: { min: 2 },
    funcs,
    data: [
      { offset: 0, bytes: Uint8Array.from([0x00, 0x20, 0x00, 0x00]) }, // bump pointer = 8192
      { offset: 2048, bytes: GENERATED },
      { offset: 3072, bytes: 'boom' },
      { offset: 5120, bytes: FROM_STRING },
    ],
  });
}

// ---------------------------------------------------------------------------------------------

describe('WasmRunner through reapi serve', { skip: sandboxSkip }, () => {
  let serve: TestServe;
  let c: ExecClients;

  before(async () => {
    serve = await startTestServe({ worker: { limits: { memoryBytes: MEMORY_CAP } } }, { name: 'reapi-wasm', instance: 'wasm' });
    c = serve.c;
  });

  after(async () => {
    await serve?.close();
  });

  const req = (module: Buffer, entry: string, input: string, extra: Partial<ExpandRequest> = {}): ExpandRequest => ({
    module,
    entry,
    input: Buffer.from(input),
    timeoutSeconds: 20,
    ...extra,
  });

  /** A good expansion right after: the worker is still serving. */
  async function assertServing(): Promise<void> {
    const input = `struct Alive${Math.random().toString(36).slice(2)};`;
    const r = await expand(c, req(echo, 'derive_echo', input));
    assert.equal(r.output.toString(), input);
  }

  /** Expand a module expected to fail: its error, after checking nothing was cached. */
  async function failure(module: Buffer, entry = 'derive_x', extra: Partial<ExpandRequest> = {}): Promise<ExpandError> {
    const r = req(module, entry, 'struct S;', extra);
    const err = await expand(c, r).then(
      () => assert.fail('the expansion should have failed'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ExpandError, `an ExpandError, got ${String(err)}`);
    assert.equal(await lookupActionResult(c, prepareExpansion(r).actionDigest), undefined, 'nothing is cached');
    await assertServing();
    return err;
  }

  test('an expansion runs, and the same expansion again is a cache hit', async () => {
    const input = 'struct Point { x : i32 , y : i32 }';
    const first = await expand(c, req(echo, 'derive_echo', input));
    assert.equal(first.output.toString(), input);
    assert.equal(first.cached, false);
    const second = await expand(c, req(echo, 'derive_echo', input));
    assert.equal(second.cached, true);
    assert.deepEqual(second.actionDigest, first.actionDigest, 'the action is deterministic (no salt)');
    assert.equal(second.output.toString(), input);
    const other = await expand(c, req(echo, 'derive_echo', `${input} // other`));
    assert.equal(other.cached, false, 'other input, other action');
  });

  test('each expansion gets a fresh instance: 100 executions give one output', async () => {
    const r = req(counter, 'derive_count', 'struct S;');
    const prepared = prepareExpansion(r);
    await uploadMissing(c, prepared.blobs);
    const outputs = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const o = await execute(c, prepared.actionDigest, { skipCacheLookup: true });
      assert.equal(o.response.result?.exit_code, 0, await stderrOf(c, o.response.result!));
      outputs.add((await outputFile(c, o.response.result!, 'expansion.rs'))!.data.toString());
    }
    assert.deepEqual([...outputs], ['1']);
  });

  test('a module that loops forever: timeout, the thread is terminated, not cached', { timeout: 60_000 }, async () => {
    const started = Date.now();
    const err = await failure(hostile.loop, 'derive_x', { timeoutSeconds: 2 });
    assert.equal(err.code, status.DEADLINE_EXCEEDED);
    assert.match(err.message, /did not finish within 2 s; the thread running it was terminated/);
    assert.ok(Date.now() - started < 30_000);
  });

  test('a module that grows memory without bound hits the cap: an error, not cached', async () => {
    const err = await failure(hostile.memory);
    assert.match(err.message, /memory cap of 64 MiB/);
    assert.notEqual(err.exitCode, 0);
  });

  test('a module importing host functions is rejected before it runs', async () => {
    const err = await failure(hostile.imports);
    assert.match(err.message, /module macro\.wasm rejected: the module imports function "env"\."now": a macro may import nothing/);
  });

  test('a trap is reported as the macro panicking (exit 101)', async () => {
    const err = await failure(hostile.trap);
    assert.equal(err.exitCode, 101);
    assert.match(err.message, /the macro panicked: unreachable/);
  });

  test('output out of bounds is an ABI error', async () => {
    const err = await failure(hostile.outOfBounds);
    assert.match(err.message, /the macro broke the ABI: the macro returned output at 4294967040\.\.4294967140 .* outside its 131072-byte memory/);
  });

  test('output that is not UTF-8 is an ABI error naming the offset', async () => {
    const err = await failure(hostile.badUtf8);
    assert.match(err.message, /the macro's output \(4 bytes\) is not valid UTF-8: the first invalid byte is near offset 1 \(0xff\)/);
  });

  test('a file that is not wasm at all', async () => {
    const err = await failure(hostile.notWasm);
    assert.match(err.message, /not a WebAssembly module: it does not start with the magic bytes 00 61 73 6d \(it starts with 7f454c46\)/);
  });

  test('shared memory, two memories, a missing entry, a wrong signature: rejected with the reason', async () => {
    assert.match((await failure(hostile.shared)).message, /memory 0 is shared; a macro gets one non-shared memory/);
    assert.match((await failure(hostile.twoMemories)).message, /has 2 memories; a macro gets exactly one/);
    assert.match((await failure(echo, 'derive_nothing')).message, /exports no function "derive_nothing"; its macro entries are: derive_echo/);
    assert.match((await failure(echo, 'derive_echo', { attr: Buffer.from('x') })).message, /"derive_echo" has signature \(i32, i32\) -> i64; as an attribute macro .* must be \(i32, i32, i32, i32\) -> i64/);
  });

  test('unbounded recursion overflows the fixed stack: reported as a panic', async () => {
    const err = await failure(hostile.recursion);
    assert.equal(err.exitCode, 101);
    assert.match(err.message, /the macro panicked: stack overflow/);
  });

  test('watt-0.5 and watt-0.4 macros run with the host token functions', async () => {
    for (const version of ['watt-0.5', 'watt-0.4'] as const) {
      const guest = wattGuest(version);
      const input = '#[derive(Demo)] pub struct S < T > { a : Vec < T > , b : & \'static str , c : [u8 ; 4] } // comment\n/// doc\nfn f() -> u32 { 0x1F_u32 + 1.5e3 as u32 + r#"raw"#.len() as u32 }';
      const identity = await expand(c, req(guest, 'demo', input));
      assert.equal(
        identity.output.toString(),
        '# [derive (Demo)] pub struct S < T > { a : Vec < T > , b : & \'static str , c : [u8 ; 4] } # [doc = " doc"] fn f () -> u32 { 0x1F_u32 + 1.5e3 as u32 + r#"raw"# . len () as u32 }',
        version,
      );
      assert.equal((await expand(c, req(guest, 'parsed', 'struct S;'))).output.toString(), GENERATED);
      assert.equal((await expand(c, req(guest, 'lit', '"hi\\n there"'))).output.toString(), '"hi\\n there"');
      assert.equal((await expand(c, req(guest, 'from_string', 'struct S;'))).output.toString(), FROM_STRING);
      assert.equal((await expand(c, req(guest, 'second', 'fn g() {}', { attr: Buffer.from('attr') }))).output.toString(), 'fn g () { }');
      const panic = await failure(guest, 'panics');
      assert.equal(panic.exitCode, 101);
      assert.match(panic.message, /the macro panicked: boom/);
    }
  });

  test('watt input that is not Rust tokens gets a lexer message', async () => {
    const r = req(wattGuest('watt-0.5'), 'demo', 'struct S { a: "unterminated }');
    const err = await expand(c, r).then(
      () => assert.fail('should fail'),
      (e: unknown) => e as ExpandError,
    );
    assert.match(err.message, /the input is not valid Rust tokens: unterminated string literal at line 1/);
    assert.equal(await lookupActionResult(c, prepareExpansion(r).actionDigest), undefined);
  });

  test('bad Commands: wrong program, a path escaping the exec root', async () => {
    const wrong = await run(c, { argv: ['reapi-wasm-macro', '--module', '../../etc/passwd', '--entry', 'x', '--input', 'in.rs', '--output', 'out.rs'], platform: { runtime: 'wasm-macro' }, inputs: { 'in.rs': 'x' } });
    assert.equal(wrong.result.exit_code, 2);
    assert.match(await stderrOf(c, wrong.result), /--module \.\.\/\.\.\/etc\/passwd points outside the exec root/);
    const missing = await run(c, { argv: ['reapi-wasm-macro', '--entry', 'x'], platform: { runtime: 'wasm-macro' } });
    assert.equal(missing.result.exit_code, 2);
    assert.match(await stderrOf(c, missing.result), /--module is required/);
    const program = await run(c, { argv: ['/bin/sh', '-c', 'echo hi'], platform: { runtime: 'wasm-macro' } });
    assert.equal(program.result.exit_code, 2);
    assert.match(await stderrOf(c, program.result), /runs "reapi-wasm-macro", not "\/bin\/sh"/);
  });

  test('the worker offering runtime=wasm-macro still runs ordinary actions', async () => {
    const r = await run(c, { sh: 'echo ordinary' });
    assert.equal(r.result.exit_code, 0);
    assert.equal(await stdoutOf(c, r.result), 'ordinary\n');
  });
});
