// WasmRunner: runs proc-macro expansions in-process, in a pool of worker threads, for actions
// whose platform has `runtime=wasm-macro`. No process is ever spawned. The Command is
//
//   reapi-wasm-macro --module M.wasm --entry NAME --input IN.rs [--attr ATTR.rs] --output OUT.rs
//
// with paths relative to the working directory inside the exec root (the worker materialised
// them there). The module is checked (imports, one non-shared memory, exports and signatures)
// and its memory capped before it runs; each expansion gets a fresh instance.
//
// How runs end: expansion written to OUT.rs and exit 0; the macro panicked (trap) -> exit 101
// with "the macro panicked: ..." on stderr; a rejected module, bad output or bad usage -> exit 1
// or 2 with the reason on stderr. None of those non-zero exits is ever cached. A timeout or the
// memory cap -> a RunFailure (never cached, the client gets the explanation). The worker keeps
// serving after any of them.
import { isAbsolute } from 'node:path';
import { components, ConfinedDir, EscapeError, NotFoundError } from '../../confined-dir.ts';
import { failedRun, type RunOutcome, type RunSpec, type Runner } from '../../../execution/runner.ts';
import { InProcessExpander, DEFAULT_WASM_MEMORY_BYTES } from '../../../execution/wasm/in-process-expander.ts';
import { WasmModuleError } from '../../../execution/wasm/module-check.ts';
import type { WasmPool } from '../../../execution/wasm/pool.ts';
import type { ExpansionResult } from '../../../execution/wasm/protocol.ts';

import { WASM_MACRO_PROGRAM } from '../../../execution/wasm-macro.ts';

export interface WasmRunnerOptions {
  /** Parallel expansions (threads). Default: the CPU count. */
  threads?: number;
  /** Cap on a module's linear memory. Default 256 MiB; lowered further by the action's memory limit. */
  maxMemoryBytes?: number;
  /** V8 stack per thread, MiB (fixed, so recursion limits do not vary). Default 8. */
  stackSizeMb?: number;
}

export { DEFAULT_WASM_MEMORY_BYTES };
/** Exit code of a macro that panicked (as a Rust process that panics exits with 101). */
export const PANIC_EXIT_CODE = 101;

interface MacroArgs {
  module: string;
  entry: string;
  input: string;
  attr?: string;
  output: string;
}

class UsageError extends Error {}

export function parseMacroArgv(argv: readonly string[]): MacroArgs {
  if (argv[0] !== WASM_MACRO_PROGRAM) throw new UsageError(`a runtime=wasm-macro action runs "${WASM_MACRO_PROGRAM}", not "${argv[0] ?? ''}"`);
  const flags = new Map<string, string>();
  for (let i = 1; i < argv.length; i += 2) {
    const flag = argv[i]!;
    const value = argv[i + 1];
    if (!['--module', '--entry', '--input', '--attr', '--output'].includes(flag)) throw new UsageError(`unknown argument "${flag}"`);
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    if (flags.has(flag)) throw new UsageError(`${flag} given twice`);
    flags.set(flag, value);
  }
  const need = (f: string) => {
    const v = flags.get(f);
    if (!v) throw new UsageError(`${f} is required (usage: ${WASM_MACRO_PROGRAM} --module M.wasm --entry NAME --input IN.rs [--attr ATTR.rs] --output OUT.rs)`);
    return v;
  };
  const args: MacroArgs = { module: need('--module'), entry: need('--entry'), input: need('--input'), output: need('--output') };
  const attr = flags.get('--attr');
  if (attr !== undefined) args.attr = attr;
  return args;
}

export class WasmRunner implements Runner {
  readonly name = 'wasm';
  private readonly expander: InProcessExpander;

  constructor(opts: WasmRunnerOptions = {}) {
    this.expander = new InProcessExpander(opts);
  }

  get pool(): WasmPool {
    return this.expander.pool;
  }

  async run(spec: RunSpec, signal: AbortSignal): Promise<RunOutcome> {
    const startedAt = new Date();
    const cpu = process.cpuUsage();
    const end = (exitCode: number, stderr: string, extra: Partial<RunOutcome> = {}): RunOutcome => {
      const used = process.cpuUsage(cpu);
      return {
        exitCode,
        stdout: Buffer.alloc(0),
        stderr: Buffer.from(stderr),
        truncated: false,
        startedAt,
        completedAt: new Date(),
        usage: { userCpuMs: Math.round(used.user / 1000), systemCpuMs: Math.round(used.system / 1000), maxRssBytes: 0 },
        ...extra,
      };
    };

    let args: MacroArgs;
    const cap = this.memoryCap(spec);
    const root = await ConfinedDir.openRoot(spec.execRoot);
    let moduleBytes: Buffer;
    let input: string;
    let attr: string | undefined;
    let output: { dir: ConfinedDir; name: string } | undefined;
    try {
      args = parseMacroArgv(spec.argv);
      const base = components(spec.workingDirectory);
      const [moduleFile, inputFile, attrFile] = await Promise.all([
        readInput(root, base, args.module, '--module'),
        readInput(root, base, args.input, '--input'),
        args.attr !== undefined ? readInput(root, base, args.attr, '--attr') : Promise.resolve(undefined),
      ]);
      output = await outputDir(root, base, args.output);
      moduleBytes = moduleFile;
      this.expander.check(moduleBytes, args.entry, attrFile !== undefined, cap);
      input = utf8(inputFile, args.input);
      if (attrFile !== undefined) attr = utf8(attrFile, args.attr!);
    } catch (err) {
      await root.close();
      await output?.dir.close();
      if (err instanceof WasmModuleError) return end(1, `${WASM_MACRO_PROGRAM}: module ${args!.module} rejected: ${err.message}\n`);
      if (err instanceof UsageError) return end(2, `${WASM_MACRO_PROGRAM}: ${err.message}\n`);
      throw err;
    }
    await root.close();

    const result: ExpansionResult = await this.expander.expand(
      { module: moduleBytes, entry: args.entry, input, ...(attr !== undefined ? { attr } : {}), memoryCapBytes: cap },
      spec.timeoutMs,
      signal,
    );
    const where = `${args.entry} in ${args.module}`;
    const out = output!;
    try {
      if (result.ok) await out.dir.writeFile(out.name, Buffer.from(result.output));
    } finally {
      await out.dir.close();
    }
    if (result.ok) {
      return end(0, '', { usage: { userCpuMs: Math.round(result.elapsedMs), systemCpuMs: 0, maxRssBytes: result.memoryBytes } });
    }
    switch (result.kind) {
      case 'panic':
        return end(PANIC_EXIT_CODE, `${WASM_MACRO_PROGRAM}: the macro panicked: ${result.message} (${where})\n`);
      case 'bad-output':
        return end(1, `${WASM_MACRO_PROGRAM}: the macro broke the ABI: ${result.message} (${where})\n`);
      case 'bad-input':
        return end(2, `${WASM_MACRO_PROGRAM}: ${result.message}\n`);
      case 'bad-module':
        return end(1, `${WASM_MACRO_PROGRAM}: module ${args.module} rejected: ${result.message}\n`);
      case 'memory-limit':
        return failedRun({ kind: 'memory-limit', message: `the macro hit its memory cap of ${cap / (1024 * 1024)} MiB: ${result.message} (${where})` }, startedAt, 1);
      case 'timeout':
        return failedRun({ kind: 'timeout', message: `${result.message} (${where})` }, startedAt);
      case 'cancelled':
        return failedRun({ kind: 'cancelled', message: result.message }, startedAt);
      case 'crashed':
        return failedRun({ kind: 'sandbox-error', message: `wasm runner: ${result.message}` }, startedAt);
    }
  }

  private memoryCap(spec: RunSpec): number {
    const max = this.expander.maxMemoryBytes;
    return spec.limits.memoryBytes > 0 ? Math.min(max, spec.limits.memoryBytes) : max;
  }

  async dispose(): Promise<void> {
    await this.expander.close();
  }
}

/** Largest module or token file read from the exec root. */
const MAX_INPUT_BYTES = 256 * 1024 * 1024;

/** `p` relative to the working directory `base`, split; refuses absolute paths and '..' above the exec root. */
function below(base: readonly string[], p: string, flag: string): string[] {
  if (isAbsolute(p)) throw new UsageError(`${flag} ${p}: paths are relative to the exec root`);
  const out = [...base];
  for (const c of components(p)) {
    if (c !== '..') out.push(c);
    else if (out.pop() === undefined) throw new UsageError(`${flag} ${p} points outside the exec root`);
  }
  if (out.length === 0) throw new UsageError(`${flag} ${p} names the exec root itself, not a file`);
  return out;
}

/** Reads an input file of the action; symlinks are followed only while they stay inside the exec root. */
async function readInput(root: ConfinedDir, base: readonly string[], p: string, flag: string): Promise<Buffer> {
  const parts = below(base, p, flag);
  try {
    const found = await root.resolve(parts);
    if (!found) throw new UsageError(`${flag} ${p}: no such file among the action's inputs`);
    try {
      if (found.kind !== 'file') throw new UsageError(`${flag} ${p}: no such file among the action's inputs`);
      return await found.dir.readFile(found.name!, MAX_INPUT_BYTES);
    } finally {
      await found.dir.close();
    }
  } catch (err) {
    throw confinedError(err, flag, p);
  }
}

/** The directory the expansion is written into (created inside the exec root when missing) and the file name. */
async function outputDir(root: ConfinedDir, base: readonly string[], p: string): Promise<{ dir: ConfinedDir; name: string }> {
  const parts = below(base, p, '--output');
  const name = parts.pop()!;
  try {
    return { dir: await root.openDir(parts, { follow: true, create: true }), name };
  } catch (err) {
    throw confinedError(err, '--output', p);
  }
}

function confinedError(err: unknown, flag: string, p: string): unknown {
  if (err instanceof EscapeError) return new UsageError(`${flag} ${p} resolves (through a symlink) outside the exec root: ${err.message}`);
  if (err instanceof NotFoundError) return new UsageError(`${flag} ${p}: ${err.message}`);
  return err;
}

function utf8(b: Buffer, name: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    throw new UsageError(`${name} is not UTF-8 text; a macro's input is Rust tokens as UTF-8`);
  }
}
