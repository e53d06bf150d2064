// The slice of the JS WebAssembly API the expansion threads use, typed here: the project's
// TypeScript libs (ES2023, no DOM) do not declare the `WebAssembly` global.

/** A compiled module (opaque). */
export interface WasmModule {
  readonly __wasmModule?: never;
}

export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}

export interface WasmInstance {
  readonly exports: Record<string, unknown>;
}

export type WasmImports = Record<string, Record<string, (...args: number[]) => number | void>>;

type ErrorClass = abstract new (message?: string) => Error;

interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: WasmImports) => WasmInstance;
  RuntimeError: ErrorClass;
  CompileError: ErrorClass;
  LinkError: ErrorClass;
}

export const Wasm: WasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
