// A real macro nobody here wrote: serde_derive 1.0.152, from Debian's librust-serde-derive-dev
// sources, compiled to our wasm ABI (guest/examples/serde). Its expansions through the fleet are
// byte-identical to the same code run natively on a corpus of types, and a crate whose types
// derive Serialize and Deserialize through the shim (guest/shim/serde-app) builds with
// `reapi cargo` (the persistent expander) and passes its serde_test and serde_json tests.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { findToolchain, offlineCargoHome } from '../../clients/macro-build.ts';
import { expand } from '../../clients/expand-client.ts';
import { connectExec, type ExecClients } from '../../clients/remote-execution.ts';
import { GUEST, REPO, expandNatively, guestArtifacts, type GuestArtifacts } from '../support/guest-build.ts';
import { startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { existsSync } from 'node:fs';

const execFileP = promisify(execFile);
const BIN = join(REPO, 'bin/reapi.mjs');

const toolchainSkip = await findToolchain().then(
  () => false as const,
  (err: Error) => `no Debian rust toolchain for wasm32: ${err.message}`,
);
const serdeSkip = ['serde_derive-1.0.152', 'serde_test-1.0.145', 'serde_json-1.0.87'].find((c) => !existsSync(`/usr/share/cargo/registry/${c}`));
const skip = sandboxSkip || toolchainSkip || (serdeSkip && `Debian's ${serdeSkip} sources are missing (scripts/bootstrap.sh --test installs them)`);

/** Types covering serde_derive's attributes, as derive input text. */
const CORPUS: Record<string, string> = {
  unit: 'struct Unit;',
  newtype: 'struct Newtype(pub u32);',
  tuple: 'struct Pair(pub i8, pub String);',
  renamed: `#[serde(rename_all = "camelCase", deny_unknown_fields)] struct Config { server_name: String, #[serde(default)] max_connections: u16, #[serde(skip_serializing_if = "Option::is_none")] tls_cert: Option<String>, #[serde(rename = "tags")] labels: Vec<String>, #[serde(skip)] cache: Option<u8> }`,
  generic: 'struct Generic<T, U: Default> where T: Clone { value: T, #[serde(default)] extra: U }',
  borrowed: "struct Borrowed<'a> { #[serde(borrow)] name: std::borrow::Cow<'a, str>, bytes: &'a str }",
  flatten: 'struct Outer { id: u64, #[serde(flatten)] inner: Inner, #[serde(flatten)] rest: std::collections::BTreeMap<String, String> }',
  external: 'enum Shape { Empty, Circle(f64), Rect { w: u32, h: u32 }, Point(i32, i32) }',
  internal: '#[serde(tag = "type")] enum Event { Start { at: u64 }, #[serde(rename = "halt")] Stop { at: u64, reason: String } }',
  adjacent: '#[serde(tag = "t", content = "c")] enum Adjacent { Num(i64), Text(String) }',
  untagged: '#[serde(untagged)] enum Loose { Int(i64), List(Vec<String>) }',
  transparent: '#[serde(transparent)] struct Meters(f32);',
  fromInto: '#[serde(from = "String", into = "String")] struct Upper(String);',
  defaults: '#[serde(crate = "serde")] struct WithDefaults { #[serde(default = "default_port")] port: u16, #[serde(alias = "host_name")] host: String, #[serde(with = "my_mod")] when: u64 }',
  invalid: '#[serde(tag = "t")] enum Bad { Tuple(u8, u8) }',
  notAnItem: 'fn f() {}',
};

describe('serde_derive as a wasm macro', { skip }, () => {
  let g: GuestArtifacts;
  let serve: ReapiProcess;
  let c: ExecClients;
  let dataDir: string;
  let scratch: string;

  before(async () => {
    g = await guestArtifacts();
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-serde-data-'));
    scratch = await mkdtemp(join(tmpdir(), 'reapi-serde-'));
    serve = await startReapi(['serve', '--data-dir', dataDir, '--log-level', 'warn']);
    c = connectExec(serve.endpoint, '');
  });
  after(async () => {
    c?.close();
    await serve?.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  });

  test('expansions through the fleet are byte-identical to serde_derive run natively', async () => {
    for (const [name, body] of Object.entries(CORPUS)) {
      for (const entry of ['derive_serialize', 'derive_deserialize']) {
        const input = `#[derive(Serialize, Deserialize)] ${body}`;
        const native = await expandNatively(g, entry, input);
        const fleet = await expand(c, { module: g.serde.wasm, entry, input: Buffer.from(input), platform: { ISA: 'x86-64' } });
        assert.ok(fleet.output.equals(native), `${name} ${entry}: the fleet's expansion differs from native`);
        if (name === 'invalid' || name === 'notAnItem') assert.match(native.toString(), /compile_error/, `${name} ${entry}`);
        else assert.match(native.toString(), entry === 'derive_serialize' ? /impl\b.*\bSerialize\b/ : /impl\b.*\bDeserialize\b/, `${name} ${entry}`);
      }
    }
  });

  test("a crate deriving Serialize and Deserialize through the shim builds with reapi cargo and passes its serde_test and serde_json tests", { timeout: 900_000 }, async () => {
    const wasmDir = join(scratch, 'wasm');
    await mkdir(wasmDir, { recursive: true });
    await copyFile(g.serde.wasmPath, join(wasmDir, 'serde.wasm'));
    const cargoHome = join(scratch, 'cargo-home');
    await offlineCargoHome(cargoHome);
    const tc = await findToolchain();
    const env = {
      ...process.env,
      PATH: `${dirname(process.execPath)}:/usr/bin:/bin`,
      HOME: cargoHome,
      CARGO_HOME: cargoHome,
      RUSTC: tc.rustc,
      RUSTDOC: '/usr/bin/rustdoc',
      CARGO_TARGET_DIR: join(scratch, 'target'),
      REAPI_BIN: '/nonexistent/reapi',
      REAPI_WASM_DIR: wasmDir,
    };
    const args = [BIN, 'cargo', '--endpoint', serve.endpoint, '--cargo', tc.cargo, '--', 'test', '-p', 'serde-app', '--tests', '--manifest-path', join(GUEST, 'shim/Cargo.toml')];
    const { stdout } = await execFileP(process.execPath, args, { env, maxBuffer: 64 << 20 }).catch((err: { stderr?: string; stdout?: string }) => {
      assert.fail(`reapi cargo test failed:\n${err.stdout ?? ''}\n${err.stderr?.slice(-6000)}`);
    });
    assert.match(stdout, /test result: ok\. 6 passed; 0 failed/);
  });
});
