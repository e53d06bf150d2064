// `reapi macro build DIR` and `reapi macro verify DIR`: build a wasm proc-macro crate offline with
// Debian's toolchain, and check that a second build elsewhere is byte-identical.
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { MacroBuildError, buildMacro, crateInfo, defaultTargetDir, findToolchain, verifyMacro } from '../clients/macro-build.ts';

interface BuildFlags {
  out?: string;
  targetDir?: string;
}

function fail(err: unknown): number {
  process.stderr.write(`reapi macro: ${err instanceof MacroBuildError ? err.message : ((err as Error).stack ?? String(err))}\n`);
  return 1;
}

async function build(dir: string, flags: BuildFlags): Promise<number> {
  const home = await mkdtemp(join(tmpdir(), 'reapi-macro-home-'));
  try {
    const tc = await findToolchain();
    const info = await crateInfo(tc, dir, { PATH: '/usr/bin:/bin', HOME: home, CARGO_HOME: home, RUSTC: tc.rustc });
    const built = await buildMacro(dir, { cargoHome: home, targetDir: flags.targetDir ?? defaultTargetDir(info.workspaceRoot) }, tc);
    let path = built.wasmPath;
    if (flags.out) {
      path = resolve(flags.out);
      await mkdir(dirname(path), { recursive: true });
      await copyFile(built.wasmPath, path);
    }
    process.stdout.write(`${path}\nsha256:${built.sha256} ${built.wasm.length} bytes\n`);
    return 0;
  } catch (err) {
    return fail(err);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

async function verify(dir: string, flags: BuildFlags): Promise<number> {
  try {
    const r = await verifyMacro(dir, flags.targetDir ? { targetDir: flags.targetDir } : {});
    if (r.reproducible) {
      process.stdout.write(`reproducible: ${r.first.name} sha256:${r.first.sha256} ${r.first.wasm.length} bytes (two builds in different directories and environments are byte-identical)\n`);
      if (flags.out) {
        await mkdir(dirname(resolve(flags.out)), { recursive: true });
        await copyFile(r.first.wasmPath, resolve(flags.out));
      }
      return 0;
    }
    process.stderr.write(
      `reapi macro verify: ${r.first.name} is NOT reproducible: the first build is sha256:${r.first.sha256} (${r.first.wasm.length} bytes), ` +
        `the second sha256:${r.second.sha256} (${r.second.wasm.length} bytes); they first differ at byte ${r.firstDifference}. ` +
        'Something in the build varies with time, directory or environment (build.rs output, env!, file!, include_str! of generated files).\n',
    );
    return 1;
  } catch (err) {
    return fail(err);
  }
}

export function registerMacroCommand(program: Command): void {
  const macro = program.command('macro').description('build wasm proc macros offline, and verify they build reproducibly');
  macro
    .command('build')
    .argument('<dir>', 'the macro crate (crate-type cdylib)')
    .description(`build the crate to wasm32-unknown-unknown (release); prints the module's path and digest`)
    .option('--out <file>', 'copy the module here')
    .option('--target-dir <dir>', 'cargo target directory (default: one under the system temp dir, reused)')
    .action(async (dir: string, flags: BuildFlags) => {
      process.exitCode = await build(dir, flags);
    });
  macro
    .command('verify')
    .argument('<dir>', 'the macro crate')
    .description('build twice, the second time from a copy in another directory with another environment, and require identical bytes')
    .option('--out <file>', 'copy the verified module here')
    .option('--target-dir <dir>', 'cargo target directory of the first build')
    .action(async (dir: string, flags: BuildFlags) => {
      process.exitCode = await verify(dir, flags);
    });
}
