// Derive macros in a cargo build, the real serde_derive both ways, same run:
//   - native: a crate whose N structs derive Serialize and Deserialize with serde's own derive
//     (the proc-macro crate compiled here, with syn, quote and proc-macro2);
//   - wasm: the same crate with the derives from the shim (guest/shim/serde-derive-shim: no syn
//     compiled at all), every expansion served by the persistent expander of `reapi cargo`
//     (serde_derive compiled to wasm, guest/examples/serde) against a `reapi serve` child.
// Cold: a fresh target directory. Warm: the crate's source touched, so rustc expands every derive
// again (the wasm side gets them from a new expander: the ActionCache, or expanded again).
// Prints wall time and the ratio wasm / native.
//
//   npm run bench -- rust-macros [--quick] [--derives=N]
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { findToolchain, offlineCargoHome } from '../clients/macro-build.ts';
import { GUEST, guestArtifacts } from '../test/support/guest-build.ts';
import { atLeast, fmtNum, log, percentile, REPO_ROOT, renderTable, saveResults, startServer, type Row } from './lib.ts';

const execFileP = promisify(execFile);

function source(n: number, derive: 'serde' | 'serde_derive_shim'): string {
  const out = [`use ${derive}::{Deserialize, Serialize};`];
  for (let i = 0; i < n; i++) {
    out.push(
      `#[derive(Serialize, Deserialize, Debug, PartialEq)]\n#[serde(rename_all = "camelCase")]\npub struct Record${i} { pub id_value: u64, pub name: String, #[serde(default)] pub tags: Vec<String>, #[serde(skip_serializing_if = "Option::is_none")] pub parent: Option<u32> }`,
    );
  }
  return out.join('\n') + '\n';
}

export async function main(args: string[] = []): Promise<void> {
  const quick = args.includes('--quick');
  const derives = Number(args.find((a) => a.startsWith('--derives='))?.slice(10) ?? (quick ? 50 : 200));
  const reps = quick ? 1 : 3;
  log('building serde.wasm (cached after the first time)...');
  const g = await guestArtifacts();
  const tc = await findToolchain();
  const dir = await mkdtemp(join(tmpdir(), 'reapi-bench-macros-'));
  // With execution: reapi cargo runs serde's build script on it too.
  const server = await startServer({ dataDir: join(dir, 'data') });
  try {
    const home = join(dir, 'cargo-home');
    await offlineCargoHome(home);
    const ws = join(dir, 'ws');
    const shim = join(GUEST, 'shim', 'serde-derive-shim');
    await mkdir(join(ws, 'native', 'src'), { recursive: true });
    await mkdir(join(ws, 'wasm', 'src'), { recursive: true });
    await writeFile(join(ws, 'Cargo.toml'), '[workspace]\nmembers = ["native", "wasm"]\n');
    await writeFile(join(ws, 'native', 'Cargo.toml'), '[package]\nname = "native"\nversion = "0.1.0"\nedition = "2021"\n[dependencies]\nserde = { version = "1", features = ["derive"] }\n');
    await writeFile(join(ws, 'wasm', 'Cargo.toml'), `[package]\nname = "wasm"\nversion = "0.1.0"\nedition = "2021"\n[dependencies]\nserde = "1"\nserde-derive-shim = { path = "${shim}" }\n`);
    await writeFile(join(ws, 'native', 'src', 'lib.rs'), source(derives, 'serde'));
    await writeFile(join(ws, 'wasm', 'src', 'lib.rs'), source(derives, 'serde_derive_shim'));
    const wasmDir = join(dir, 'wasm-modules');
    await mkdir(wasmDir, { recursive: true });
    await copyFile(g.serde.wasmPath, join(wasmDir, 'serde.wasm'));
    const env = { ...process.env, PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, HOME: home, CARGO_HOME: home, RUSTC: tc.rustc, REAPI_WASM_DIR: wasmDir, REAPI_BIN: '/nonexistent' };
    const build = async (which: 'native' | 'wasm', target: string): Promise<number> => {
      const cargoArgs = ['build', '-p', which, '--manifest-path', join(ws, 'Cargo.toml')];
      const e = { ...env, CARGO_TARGET_DIR: target };
      const t0 = performance.now();
      if (which === 'native') await execFileP(tc.cargo, cargoArgs, { env: e, maxBuffer: 64 << 20 });
      else await execFileP(process.execPath, [join(REPO_ROOT, 'bin', 'reapi.mjs'), 'cargo', '--quiet', '--endpoint', `grpc://${server.address}`, '--cargo', tc.cargo, '--', ...cargoArgs], { env: e, maxBuffer: 64 << 20 });
      return (performance.now() - t0) / 1000;
    };
    const touch = async (which: string) => {
      const now = new Date();
      await utimes(join(ws, which, 'src', 'lib.rs'), now, now);
    };
    const times: Record<string, number[]> = { 'native cold': [], 'wasm cold': [], 'native warm': [], 'wasm warm': [] };
    log(`${derives} structs x 2 derives, ${reps} rep(s): cold (fresh target dir) and warm (source touched)`);
    for (let r = 0; r < reps; r++) {
      for (const which of ['native', 'wasm'] as const) {
        const target = join(dir, `target-${which}-${r}`);
        times[`${which} cold`]!.push(await build(which, target));
        await touch(which);
        times[`${which} warm`]!.push(await build(which, target));
      }
    }
    const med = (k: string) => percentile(times[k]!, 50);
    const rows: Row[] = [{ name: `A crate of ${derives} structs deriving serde's Serialize and Deserialize (${2 * derives} expansions)`, value: '' }];
    for (const kind of ['cold', 'warm'] as const) {
      const n = med(`native ${kind}`);
      const w = med(`wasm ${kind}`);
      rows.push({ name: `  ${kind}: native serde_derive (syn, quote, proc-macro2 compiled)`, value: `${fmtNum(n, 2)} s` });
      rows.push({
        name: `  ${kind}: wasm serde_derive via reapi cargo's expander`,
        value: `${fmtNum(w, 2)} s`,
        ratio: `${fmtNum(w / n, 2)}x native`,
        ...(kind === 'cold' ? { target: atLeast(n / w, 1, 'faster than native') } : {}),
      });
    }
    process.stdout.write(`\n${renderTable('reapi: derive macros in a cargo build (wall time, median)', rows)}\n`);
    process.stdout.write(`results: ${await saveResults('rust-macros', { derives, reps, times })}\n`);
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
