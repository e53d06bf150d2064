// Wasm proc macros end to end, with real processes: the example macros (syn + quote) built to
// wasm offline with Debian's rustc, `reapi serve`, and
// - `reapi expand`: expansions through the fleet are byte-identical to the same macro run
//   natively; the same expansion twice is a cache hit; a panicking or rejected module exits
//   non-zero with the reason on stderr;
// - cargo: a crate whose #[derive] and #[attribute] are wasm macros (through the native shim in
//   guest/shim, which forwards to `reapi expand`) compiles and runs;
// - `reapi macro verify`: passes on the example macros, fails on one that embeds its build time.
// Needs Debian's cargo/rustc with the wasm32 target and lld, bwrap and root (the worker's sandbox).
// Builds take a minute or two cold on 2 cores (cached under the system temp dir afterwards).
// Run: node --import tsx --test test/e2e/wasm-macro.test.ts
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { findToolchain, offlineCargoHome } from '../../clients/macro-build.ts';
import { GUEST, REPO, expandNatively, guestArtifacts, type GuestArtifacts } from '../support/guest-build.ts';
import { httpGet, metricValue, startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { op, stringMacro } from '../support/wasm-module.ts';

const execFileP = promisify(execFile);
const BIN = join(REPO, 'bin/reapi.mjs');

const toolchainSkip = await findToolchain().then(
  () => false as const,
  (err: Error) => `no Debian rust toolchain for wasm32: ${err.message}`,
);
const skip = sandboxSkip || toolchainSkip;

interface CliResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Run `reapi ARGS` with `stdin`. */
function reapi(args: string[], stdin = ''): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err }));
    child.stdin.end(stdin);
  });
}

function bigStruct(fields: number): string {
  const body = Array.from({ length: fields }, (_, i) => `    pub field_${i}: Option<Vec<(u32, String)>>,`).join('\n');
  return `/// A struct with ${fields} fields.\n#[derive(Describe, Clone)]\npub struct Big<'a, T: Clone> where T: Default {\n${body}\n    pub tail: &'a T,\n}\n`;
}

const DERIVE_INPUTS: Record<string, string> = {
  unit: 'struct Unit;',
  named: '#[derive(Describe)] pub struct Point { pub x: i32, y: f64 }',
  generic: "struct Wrapper<'a, T: Clone + 'a, const N: usize> where T: Default { items: [&'a T; N] }",
  tuple: 'struct Pair(u8, String);',
  enumeration: 'enum Shape { Circle { r: f32 }, Square(u32), Empty = 3 }',
  big: bigStruct(200),
  union: 'union U { a: u32, b: f32 }',
  notAnItem: 'fn not_a_type() {}',
  unbalanced: 'struct S { a: (u8 }',
};

describe('wasm proc macros end to end', { skip }, () => {
  let g: GuestArtifacts;
  let serve: ReapiProcess;
  let dataDir: string;
  let scratch: string;

  before(async () => {
    g = await guestArtifacts();
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-wasm-e2e-data-'));
    scratch = await mkdtemp(join(tmpdir(), 'reapi-wasm-e2e-'));
    serve = await startReapi(['serve', '--data-dir', dataDir, '--log-level', 'warn']);
  });

  after(async () => {
    await serve?.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  });

  const expandArgs = (module: string, entry: string, extra: string[] = []) => ['expand', '--endpoint', serve.endpoint, '--module', module, '--entry', entry, ...extra];

  test('expansions through the fleet are byte-identical to the same macros run natively', async () => {
    for (const [name, input] of Object.entries(DERIVE_INPUTS)) {
      const native = await expandNatively(g, 'derive_describe', input);
      const r = await reapi(expandArgs(g.describe.wasmPath, 'derive_describe'), input);
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.ok(r.stdout.length > 0, name);
      assert.ok(r.stdout.equals(native), `${name}: wasm and native differ\nwasm:   ${r.stdout}\nnative: ${native}`);
    }
    assert.match((await expandNatively(g, 'derive_describe', DERIVE_INPUTS.union!)).toString(), /compile_error ! \{ "Describe does not support unions" \}/);
    for (const [attr, item] of [
      ['', 'fn plain(a: u32) -> u32 { a + 1 }'],
      ['"labelled"', 'pub(crate) async fn labelled<T>(x: T) -> Option<T> where T: Copy { Some(x) }'],
      ['not a string literal', 'fn f() {}'],
    ] as const) {
      const attrFile = join(scratch, 'attr.rs');
      await writeFile(attrFile, attr);
      const native = await expandNatively(g, 'attr_trace', item, attrFile);
      const r = await reapi(expandArgs(g.trace.wasmPath, 'attr_trace', ['--attr', attrFile]), item);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(native), `trace(${attr}): wasm and native differ\nwasm:   ${r.stdout}\nnative: ${native}`);
    }
  });

  test('the same expansion twice: the second is served from the ActionCache', async () => {
    const input = 'struct Cached { a: u8 }';
    const first = await reapi(expandArgs(g.describe.wasmPath, 'derive_describe', ['--verbose']), input);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /reapi expand: executed in/);
    const second = await reapi(expandArgs(g.describe.wasmPath, 'derive_describe', ['--verbose']), input);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /reapi expand: cache hit in/);
    assert.ok(second.stdout.equals(first.stdout));
  });

  test('errors: non-zero exit, the reason on stderr, nothing on stdout', async () => {
    const trap = join(scratch, 'trap.wasm');
    await writeFile(trap, stringMacro('derive_x', [...op.unreachable]));
    const panicked = await reapi(expandArgs(trap, 'derive_x'), 'struct S;');
    assert.equal(panicked.code, 101);
    assert.equal(panicked.stdout.length, 0);
    assert.match(panicked.stderr, /^reapi expand: reapi-wasm-macro: the macro panicked: unreachable/);

    const notWasm = join(scratch, 'not.wasm');
    await writeFile(notWasm, 'hello');
    const rejected = await reapi(expandArgs(notWasm, 'derive_x'), 'struct S;');
    assert.equal(rejected.code, 1);
    assert.match(rejected.stderr, /not a WebAssembly module/);

    const noEntry = await reapi(expandArgs(g.describe.wasmPath, 'derive_nope'), 'struct S;');
    assert.equal(noEntry.code, 1);
    assert.match(noEntry.stderr, /exports no function "derive_nope"; its macro entries are: derive_describe/);

    const unreachable = await reapi(['expand', '--endpoint', 'grpc://127.0.0.1:1', '--module', g.describe.wasmPath, '--entry', 'derive_describe'], 'struct S;');
    assert.notEqual(unreachable.code, 0);
    assert.match(unreachable.stderr, /^reapi expand: .*(UNAVAILABLE|No connection|ECONNREFUSED)/);
  });

  test('cargo builds and runs a crate whose derive and attribute are wasm macros expanded through the fleet', { timeout: 600_000 }, async () => {
    const wasmDir = join(scratch, 'wasm');
    await mkdir(wasmDir, { recursive: true });
    await copyFile(g.describe.wasmPath, join(wasmDir, 'describe.wasm'));
    await copyFile(g.trace.wasmPath, join(wasmDir, 'trace.wasm'));
    const cargoHome = join(scratch, 'cargo-home');
    // The shim workspace also holds serde-app (Debian's serde sources, offline).
    await offlineCargoHome(cargoHome);
    const tc = await findToolchain();
    const executedBefore = metricValue(await httpGet(serve.httpPort, '/metrics'), 'reapi_actions_executed_total{outcome="success"}');
    const targetDir = join(scratch, 'shim-target');
    const env = {
      PATH: `${dirname(process.execPath)}:/usr/bin:/bin`,
      HOME: cargoHome,
      CARGO_HOME: cargoHome,
      RUSTC: tc.rustc,
      CARGO_TARGET_DIR: targetDir,
      REAPI_BIN: BIN,
      REAPI_ENDPOINT: serve.endpoint,
      REAPI_WASM_DIR: wasmDir,
    };
    await execFileP(tc.cargo, ['build', '-p', 'demo-app', '--manifest-path', join(GUEST, 'shim/Cargo.toml')], { env, maxBuffer: 64 << 20 }).catch((err: { stderr?: string }) => {
      assert.fail(`cargo build failed:\n${err.stderr}`);
    });
    const { stdout } = await execFileP(join(targetDir, 'debug/demo-app'));
    assert.equal(
      stdout,
      ['struct Point { x, y, label }', '["x", "y", "label"]', 'enum Shape { Circle | Square }', '1 2 p', '18', 'trace: ["area", "double"]', ''].join('\n'),
    );
    const executedAfter = metricValue(await httpGet(serve.httpPort, '/metrics'), 'reapi_actions_executed_total{outcome="success"}');
    assert.ok(executedAfter - executedBefore >= 4, `the 2 derives and 2 attributes ran on the fleet (${executedAfter - executedBefore} actions)`);
  });

  test('through reapi cargo the shim asks the persistent expander: no reapi process per macro, nothing executed again', { timeout: 600_000 }, async () => {
    const wasmDir = join(scratch, 'wasm');
    const cargoHome = join(scratch, 'cargo-home');
    const tc = await findToolchain();
    const executedBefore = metricValue(await httpGet(serve.httpPort, '/metrics'), 'reapi_actions_executed_total{outcome="success"}');
    const targetDir = join(scratch, 'shim-target-expander');
    const env = {
      ...process.env,
      PATH: `${dirname(process.execPath)}:/usr/bin:/bin`,
      HOME: cargoHome,
      CARGO_HOME: cargoHome,
      RUSTC: tc.rustc,
      CARGO_TARGET_DIR: targetDir,
      // Any `reapi expand` the shim started would fail: every expansion must go to the expander.
      REAPI_BIN: '/nonexistent/reapi',
      REAPI_WASM_DIR: wasmDir,
    };
    const args = [BIN, 'cargo', '--endpoint', serve.endpoint, '--cargo', tc.cargo, '--', 'build', '-p', 'demo-app', '--manifest-path', join(GUEST, 'shim/Cargo.toml')];
    await execFileP(process.execPath, args, { env, maxBuffer: 64 << 20 }).catch((err: { stderr?: string }) => {
      assert.fail(`reapi cargo build failed:\n${err.stderr}`);
    });
    const { stdout } = await execFileP(join(targetDir, 'debug/demo-app'));
    assert.equal(
      stdout,
      ['struct Point { x, y, label }', '["x", "y", "label"]', 'enum Shape { Circle | Square }', '1 2 p', '18', 'trace: ["area", "double"]', ''].join('\n'),
    );
    // The previous test's expansions are ActionCache hits for the expander: nothing ran again.
    const executedAfter = metricValue(await httpGet(serve.httpPort, '/metrics'), 'reapi_actions_executed_total{outcome="success"}');
    assert.equal(executedAfter - executedBefore, 0);
  });

  test('macro verify passes on the example macros and prints the digest', { timeout: 900_000 }, async () => {
    for (const [name, built] of [
      ['describe', g.describe],
      ['trace', g.trace],
    ] as const) {
      const r = await reapi(['macro', 'verify', join(GUEST, 'examples', name), '--target-dir', g.targetDir]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), `reproducible: ${name} sha256:${built.sha256} ${built.wasm.length} bytes (two builds in different directories and environments are byte-identical)\n`);
    }
  });

  test('macro verify fails on a macro that embeds its build time', { timeout: 600_000 }, async () => {
    const r = await reapi(['macro', 'verify', join(GUEST, 'examples/stamped'), '--target-dir', join(scratch, 'stamped-target')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /reapi macro verify: stamped is NOT reproducible: the first build is sha256:[0-9a-f]{64} \(\d+ bytes\), the second sha256:[0-9a-f]{64} \(\d+ bytes\); they first differ at byte \d+/);
  });

  test('macro build prints the module and its digest; a crate without a cdylib is refused', { timeout: 600_000 }, async () => {
    const out = join(scratch, 'out/describe.wasm');
    const r = await reapi(['macro', 'build', join(GUEST, 'examples/describe'), '--target-dir', g.targetDir, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), `${out}\nsha256:${g.describe.sha256} ${g.describe.wasm.length} bytes\n`);
    const bad = await reapi(['macro', 'build', join(GUEST, 'native-expand')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /native-expand has no cdylib target/);
  });
});
