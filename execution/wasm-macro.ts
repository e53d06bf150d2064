// The shape of a wasm-macro action, shared by the client that builds it (`reapi expand`) and the
// worker that runs it: the platform that routes it to the WasmRunner, and its program name.

/** Platform of a wasm proc-macro expansion. */
export const WASM_MACRO_PLATFORM = { runtime: 'wasm-macro' } as const;

/** argv[0] of a wasm-macro Command. */
export const WASM_MACRO_PROGRAM = 'reapi-wasm-macro';
