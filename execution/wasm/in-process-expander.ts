// Proc-macro expansion in this process: the checked module (imports, one non-shared memory,
// exports, signatures; memory capped) run in a fresh instance on the thread pool, under a
// wall-clock limit. Shared by the worker's WasmRunner (expansions the fleet executes) and the
// local expander behind the cargo shim (clients/expander/), so both expand byte-identically.
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { checkEntry, checkModule, WasmModuleError, type CheckedModule } from './module-check.ts';
import { WasmPool } from './pool.ts';
import type { ExpansionResult } from './protocol.ts';

export const DEFAULT_WASM_MEMORY_BYTES = 256 * 1024 * 1024;
const MAX_CACHED_MODULES = 32;

export interface InProcessExpanderOptions {
  /** Parallel expansions (threads). Default: the CPU count. */
  threads?: number;
  /** Cap on a module's linear memory (callers may lower it per expansion). Default 256 MiB. */
  maxMemoryBytes?: number;
  /** V8 stack per thread, MiB (fixed, so recursion limits do not vary). Default 8. */
  stackSizeMb?: number;
}

export interface Expansion {
  module: Buffer;
  entry: string;
  input: string;
  /** The attribute's tokens: an attribute macro. */
  attr?: string;
  /** Lower than the expander's cap (e.g. the action's memory limit). */
  memoryCapBytes?: number;
}

export class InProcessExpander {
  readonly pool: WasmPool;
  readonly maxMemoryBytes: number;
  private readonly modules = new Map<string, CheckedModule | WasmModuleError>();

  constructor(opts: InProcessExpanderOptions = {}) {
    this.maxMemoryBytes = opts.maxMemoryBytes ?? DEFAULT_WASM_MEMORY_BYTES;
    this.pool = new WasmPool({ size: opts.threads ?? availableParallelism(), stackSizeMb: opts.stackSizeMb ?? 8 });
  }

  /**
   * The module checked for expanding `entry` (attribute or not); throws WasmModuleError for a
   * module or entry that is refused. Checked modules are remembered by content.
   */
  check(bytes: Buffer, entry: string, attribute: boolean, cap = this.maxMemoryBytes): CheckedModule {
    const id = `${createHash('sha256').update(bytes).digest('hex')}:${cap}`;
    let result = this.modules.get(id);
    if (result) {
      this.modules.delete(id);
    } else {
      try {
        result = checkModule(bytes, { maxMemoryBytes: cap });
      } catch (err) {
        if (!(err instanceof WasmModuleError)) throw err;
        result = err;
      }
    }
    this.modules.set(id, result);
    if (this.modules.size > MAX_CACHED_MODULES) this.modules.delete(this.modules.keys().next().value!);
    if (result instanceof WasmModuleError) throw result;
    checkEntry(result, entry, attribute);
    return result;
  }

  /** Expand once (a fresh instance). A refused module comes back as kind 'bad-module'. */
  async expand(e: Expansion, timeoutMs: number, signal?: AbortSignal): Promise<ExpansionResult> {
    const cap = Math.min(e.memoryCapBytes ?? this.maxMemoryBytes, this.maxMemoryBytes);
    let checked: CheckedModule;
    try {
      checked = this.check(e.module, e.entry, e.attr !== undefined, cap);
    } catch (err) {
      if (err instanceof WasmModuleError) return { ok: false, kind: 'bad-module', message: err.message };
      throw err;
    }
    const inputs = e.attr !== undefined ? [e.attr, e.input] : [e.input];
    return this.pool.expand({ moduleKey: `${checked.sha256}:${cap}`, module: checked.bytes, abi: checked.abi, entry: e.entry, inputs, memoryCapBytes: cap }, timeoutMs, signal);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
