// Builds the example wasm macros (guest/examples) and their native runner once, for tests and
// benchmarks. The cargo target directory lives under the system temp dir, keyed by the guest
// sources, so later runs (and other test files) reuse it; cargo's own lock serialises builds.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { buildMacro, findToolchain, type BuiltMacro } from '../../clients/macro-build.ts';

const execFileP = promisify(execFile);
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const GUEST = join(REPO, 'guest');

function guestKey(): string {
  const h = createHash('sha256');
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      if (name === 'target' || name === 'shim') continue;
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else h.update(p).update(readFileSync(p));
    }
  };
  walk(GUEST);
  return h.digest('hex').slice(0, 16);
}

export interface GuestArtifacts {
  describe: BuiltMacro;
  trace: BuiltMacro;
  /** serde_derive (Debian's sources) as a wasm macro: derive_serialize, derive_deserialize. */
  serde: BuiltMacro;
  /** The native runner of the same macros: `native-expand ENTRY [--attr FILE] < input`. */
  nativeExpand: string;
  targetDir: string;
}

let cached: Promise<GuestArtifacts> | undefined;

/** Build (or reuse) describe.wasm, trace.wasm and native-expand. ~1-2 min cold on 2 cores. */
export function guestArtifacts(): Promise<GuestArtifacts> {
  cached ??= (async () => {
    const tc = await findToolchain();
    const targetDir = join(tmpdir(), `reapi-test-guest-${guestKey()}`);
    await mkdir(targetDir, { recursive: true });
    const home = await mkdtemp(join(tmpdir(), 'reapi-test-cargo-home-'));
    const env = { cargoHome: home, targetDir };
    const describe = await buildMacro(join(GUEST, 'examples/describe'), env, tc);
    const trace = await buildMacro(join(GUEST, 'examples/trace'), env, tc);
    const serde = await buildMacro(join(GUEST, 'examples/serde'), env, tc);
    await execFileP(tc.cargo, ['build', '--release', '--locked', '-p', 'native-expand', '--manifest-path', join(GUEST, 'Cargo.toml')], {
      env: { PATH: '/usr/bin:/bin', HOME: home, CARGO_HOME: home, CARGO_TARGET_DIR: targetDir, RUSTC: tc.rustc },
      maxBuffer: 64 << 20,
    });
    return { describe, trace, serde, nativeExpand: join(targetDir, 'release', 'native-expand'), targetDir };
  })();
  return cached;
}

/** Run the native macro: what the wasm module should produce byte for byte. */
export async function expandNatively(a: GuestArtifacts, entry: string, input: string, attrFile?: string): Promise<Buffer> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolvePromise, reject) => {
    const child = spawn(a.nativeExpand, [entry, ...(attrFile ? ['--attr', attrFile] : [])], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolvePromise(Buffer.concat(out)) : reject(new Error(`native-expand exited ${code}: ${err}`))));
    child.stdin.end(input);
  });
}
