// Messages between the WasmRunner's pool (main thread) and its expansion threads.
import type { MacroAbi } from './module-check.ts';

export interface ExpansionJob {
  /** Identifies `module` (sha256 of the original bytes + memory cap): threads cache compiled modules by it. */
  moduleKey: string;
  /** The checked module, memory capped. */
  module: Uint8Array;
  abi: MacroAbi;
  entry: string;
  /** Derive / function-like: [input]; attribute: [attr, item]. */
  inputs: string[];
  memoryCapBytes: number;
}

export type ExpansionFailureKind =
  /** The macro trapped (a Rust panic aborts; so does a stack overflow). */
  | 'panic'
  /** The macro broke the ABI: output out of bounds, not UTF-8, bad handles. */
  | 'bad-output'
  /** The input tokens could not be handed to the macro (watt: not Rust tokens). */
  | 'bad-input'
  /** The engine refused the module (validation failed at compile time). */
  | 'bad-module'
  /** The macro grew its memory to the cap and then failed. */
  | 'memory-limit'
  | 'timeout'
  | 'cancelled'
  /** The thread died or the host failed: not the macro's fault. */
  | 'crashed';

export type ExpansionResult =
  | { ok: true; output: string; memoryBytes: number; elapsedMs: number }
  | { ok: false; kind: ExpansionFailureKind; message: string; memoryBytes?: number };

/** `module` is left out when the thread was already sent it (it caches compiled modules). */
export interface JobMessage {
  id: number;
  job: Omit<ExpansionJob, 'module'> & { module?: Uint8Array };
}

/** `needModule`: the thread no longer has the module compiled; send the job again with it. */
export type ResultMessage = { id: number; result: ExpansionResult } | { id: number; needModule: true };
