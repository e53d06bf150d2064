// Checks a wasm proc-macro module before anything runs it, and caps its memory.
// The binary's sections are parsed just far enough to answer: which imports (none for the string
// ABI; exactly the watt host functions for watt macros), one memory, not shared, not 64-bit, and
// the exports the ABI needs with the right signatures. The memory section is rewritten so that
// the memory's maximum is at most the cap: growing past it fails inside the guest (a Rust macro
// then aborts, which traps), and never takes the host's memory.
import { createHash } from 'node:crypto';

export const WASM_PAGE_BYTES = 65536;

/** The ABIs a module may speak (see README: "Wasm proc macros"). */
export type MacroAbi = 'string' | 'watt-0.5' | 'watt-0.4';

/** A module that is not acceptable, with a message for the macro's user. */
export class WasmModuleError extends Error {
  override readonly name = 'WasmModuleError';
}

type ValType = 'i32' | 'i64' | 'f32' | 'f64' | 'v128' | 'funcref' | 'externref';
interface FuncType {
  params: ValType[];
  results: ValType[];
}

/** The watt host functions and their signatures (wasm32: usize and handles are i32). */
export const WATT_IMPORTS: Readonly<Record<string, FuncType>> = {
  token_stream_serialize: { params: ['i32'], results: ['i32'] },
  token_stream_deserialize: { params: ['i32', 'i32'], results: ['i32'] },
  token_stream_parse: { params: ['i32', 'i32'], results: ['i32'] },
  literal_to_string: { params: ['i32'], results: ['i32'] },
  string_new: { params: ['i32', 'i32'], results: ['i32'] },
  string_len: { params: ['i32'], results: ['i32'] },
  string_read: { params: ['i32', 'i32'], results: [] },
  bytes_len: { params: ['i32'], results: ['i32'] },
  bytes_read: { params: ['i32', 'i32'], results: [] },
  print_panic: { params: ['i32'], results: [] },
};
const WATT_MODULES: Record<string, MacroAbi> = { 'watt-0.5': 'watt-0.5', 'watt-0.4': 'watt-0.4' };

export interface CheckedModule {
  abi: MacroAbi;
  /** The module as it will run: its memory maximum rewritten to at most the cap. */
  bytes: Uint8Array;
  /** sha256 of the original bytes. */
  sha256: string;
  /** Names of the exported functions. */
  functions: Set<string>;
  /** Signature of each exported function, e.g. "(i32, i32) -> i64". */
  signatures: Map<string, string>;
  memory: { minPages: number; maxPages: number };
}

export interface CheckOptions {
  /** Largest linear memory the module may have, in bytes (rounded down to whole pages). */
  maxMemoryBytes: number;
}

class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }
  byte(what: string): number {
    if (this.pos >= this.end) throw new WasmModuleError(`truncated module: ran out of bytes reading ${what}`);
    return this.buf[this.pos++]!;
  }
  u32(what: string): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte(what);
      if (shift === 28 && b > 0x0f) throw new WasmModuleError(`malformed LEB128 integer in ${what}`);
      result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result >>> 0;
      shift += 7;
      if (shift > 28) throw new WasmModuleError(`malformed LEB128 integer in ${what}`);
    }
  }
  bytes(n: number, what: string): Uint8Array {
    if (this.pos + n > this.end) throw new WasmModuleError(`truncated module: ${what} runs past its section`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  name(what: string): string {
    const len = this.u32(what);
    const raw = this.bytes(len, what);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      throw new WasmModuleError(`${what} is not valid UTF-8`);
    }
  }
}

const VALTYPES: Record<number, ValType> = { 0x7f: 'i32', 0x7e: 'i64', 0x7d: 'f32', 0x7c: 'f64', 0x7b: 'v128', 0x70: 'funcref', 0x6f: 'externref' };

function valType(r: Reader, what: string): ValType {
  const b = r.byte(what);
  const t = VALTYPES[b];
  if (!t) throw new WasmModuleError(`unsupported value type 0x${b.toString(16)} in ${what}`);
  return t;
}

interface Limits {
  flags: number;
  min: number;
  max?: number;
}

function limits(r: Reader, what: string): Limits {
  const flags = r.byte(what);
  if (flags & 0x04) throw new WasmModuleError(`${what} is a 64-bit memory; only 32-bit memories are allowed`);
  if (flags & 0x02) throw new WasmModuleError(`${what} is shared; a macro gets one non-shared memory`);
  if (flags > 1) throw new WasmModuleError(`${what} has unknown limit flags 0x${flags.toString(16)}`);
  const min = r.u32(`${what} minimum`);
  const max = flags & 1 ? r.u32(`${what} maximum`) : undefined;
  return max === undefined ? { flags, min } : { flags, min, max };
}

export const signatureText = (t: FuncType): string => `(${t.params.join(', ')}) -> ${t.results.length === 0 ? '()' : t.results.join(', ')}`;

function encodeU32(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

const SECTION_NAMES = ['custom', 'type', 'import', 'function', 'table', 'memory', 'global', 'export', 'start', 'element', 'code', 'data', 'data count', 'tag'];

/**
 * Parse and check a module; return it with its memory capped. Throws WasmModuleError naming
 * what is wrong: not wasm, imports outside the allowed set, no memory or more than one, shared
 * or 64-bit memory, a minimum above the cap.
 */
export function checkModule(input: Uint8Array, opts: CheckOptions): CheckedModule {
  const sha256 = createHash('sha256').update(input).digest('hex');
  if (input.length < 8 || input[0] !== 0x00 || input[1] !== 0x61 || input[2] !== 0x73 || input[3] !== 0x6d) {
    const head = Buffer.from(input.subarray(0, 4)).toString('hex');
    throw new WasmModuleError(`not a WebAssembly module: it does not start with the magic bytes 00 61 73 6d (it starts with ${head || 'nothing: the file is empty'})`);
  }
  const version = input[4]! | (input[5]! << 8) | (input[6]! << 16) | (input[7]! << 24);
  if (version !== 1) {
    throw new WasmModuleError(`unsupported WebAssembly binary version ${version} (a component or a newer format?); a macro must be a core module, version 1`);
  }
  const capPages = Math.min(65536, Math.floor(opts.maxMemoryBytes / WASM_PAGE_BYTES));
  const r = new Reader(input, 8);
  const types: FuncType[] = [];
  const funcTypes: number[] = []; // type index of every function, imported ones first
  const memories: Array<{ limits: Limits; imported: boolean }> = [];
  const exports = new Map<string, { kind: number; index: number }>();
  const badImports: string[] = [];
  const importModules = new Set<string>();
  let memorySection: { headerStart: number; end: number } | undefined;
  let lastId = 0;
  const order = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11]; // the spec's section order (13 = tag)

  while (r.pos < input.length) {
    const headerStart = r.pos;
    const id = r.byte('a section id');
    const size = r.u32('a section size');
    const start = r.pos;
    const end = start + size;
    if (end > input.length) throw new WasmModuleError(`truncated module: the ${SECTION_NAMES[id] ?? `#${id}`} section claims ${size} bytes, more than the file holds`);
    if (id > 13) throw new WasmModuleError(`unknown section id ${id}`);
    if (id !== 0) {
      const rank = order.indexOf(id);
      if (rank < order.indexOf(lastId) && lastId !== 0) throw new WasmModuleError(`the ${SECTION_NAMES[id]} section is out of order`);
      lastId = id;
    }
    const s = new Reader(input, start, end);
    if (id === 1) {
      const n = s.u32('the type count');
      for (let i = 0; i < n; i++) {
        const form = s.byte('a type form');
        if (form !== 0x60) throw new WasmModuleError(`type ${i} is not a function type (form 0x${form.toString(16)})`);
        const params = Array.from({ length: s.u32('a parameter count') }, () => valType(s, `type ${i}`));
        const results = Array.from({ length: s.u32('a result count') }, () => valType(s, `type ${i}`));
        types.push({ params, results });
      }
    } else if (id === 2) {
      const n = s.u32('the import count');
      for (let i = 0; i < n; i++) {
        const mod = s.name('an import module name');
        const field = s.name('an import name');
        const kind = s.byte('an import kind');
        const label = `"${mod}"."${field}"`;
        if (kind === 0x00) {
          const typeIndex = s.u32('an import type index');
          funcTypes.push(typeIndex);
          const abi = WATT_MODULES[mod];
          const expected = abi ? WATT_IMPORTS[field] : undefined;
          if (!expected) {
            badImports.push(`function ${label}`);
          } else {
            importModules.add(mod);
            const actual = types[typeIndex];
            if (!actual || signatureText(actual) !== signatureText(expected)) {
              throw new WasmModuleError(`import ${label} has signature ${actual ? signatureText(actual) : '(unknown type)'}; the watt host function is ${signatureText(expected)}`);
            }
          }
        } else if (kind === 0x01) {
          s.byte('a table element type');
          limits(s, `imported table ${label}`);
          badImports.push(`table ${label}`);
        } else if (kind === 0x02) {
          memories.push({ limits: limits(s, `imported memory ${label}`), imported: true });
          badImports.push(`memory ${label}`);
        } else if (kind === 0x03) {
          valType(s, `imported global ${label}`);
          s.byte('a global mutability');
          badImports.push(`global ${label}`);
        } else {
          throw new WasmModuleError(`import ${label} has unknown kind 0x${kind.toString(16)}`);
        }
      }
    } else if (id === 3) {
      const n = s.u32('the function count');
      for (let i = 0; i < n; i++) funcTypes.push(s.u32('a function type index'));
    } else if (id === 5) {
      const n = s.u32('the memory count');
      for (let i = 0; i < n; i++) memories.push({ limits: limits(s, `memory ${i}`), imported: false });
      memorySection = { headerStart, end };
    } else if (id === 7) {
      const n = s.u32('the export count');
      for (let i = 0; i < n; i++) {
        const name = s.name('an export name');
        const kind = s.byte('an export kind');
        const index = s.u32('an export index');
        exports.set(name, { kind, index });
      }
    }
    r.pos = end;
  }

  if (badImports.length > 0) {
    const shown = badImports.slice(0, 5).join(', ') + (badImports.length > 5 ? ` and ${badImports.length - 5} more` : '');
    throw new WasmModuleError(
      `the module imports ${shown}: a macro may import nothing (reapi's string ABI) or only the watt host functions ` +
        `(module "watt-0.5" or "watt-0.4": ${Object.keys(WATT_IMPORTS).join(', ')}); no files, network, clock or randomness`,
    );
  }
  if (importModules.size > 1) throw new WasmModuleError(`the module imports from both ${[...importModules].join(' and ')}; one watt version per module`);
  if (memories.length === 0) throw new WasmModuleError('the module has no memory; a macro exports exactly one memory named "memory"');
  if (memories.length > 1) throw new WasmModuleError(`the module has ${memories.length} memories; a macro gets exactly one`);
  const mem = memories[0]!.limits;
  if (mem.min > capPages) {
    throw new WasmModuleError(`the module's memory starts at ${mem.min} pages (${mib(mem.min * WASM_PAGE_BYTES)}), more than the cap of ${capPages} pages (${mib(capPages * WASM_PAGE_BYTES)})`);
  }
  const memExport = exports.get('memory');
  if (!memExport || memExport.kind !== 0x02) throw new WasmModuleError('the module does not export its memory as "memory"');

  const functions = new Set<string>();
  const signatures = new Map<string, string>();
  for (const [name, e] of exports) {
    if (e.kind !== 0x00) continue;
    const t = types[funcTypes[e.index] ?? -1];
    if (!t) throw new WasmModuleError(`export "${name}" names function ${e.index}, which does not exist`);
    functions.add(name);
    signatures.set(name, signatureText(t));
  }

  const abi: MacroAbi = importModules.size === 1 ? WATT_MODULES[[...importModules][0]!]! : functions.has('raw_to_token_stream') ? 'watt-0.5' : 'string';
  const required: Record<string, string> =
    abi === 'string'
      ? { alloc: '(i32) -> i32', dealloc: '(i32, i32) -> ()' }
      : { raw_to_token_stream: '(i32) -> i32', token_stream_into_raw: '(i32) -> i32' };
  for (const [name, sig] of Object.entries(required)) {
    const actual = signatures.get(name);
    if (actual === undefined) {
      throw new WasmModuleError(
        abi === 'string'
          ? `the module does not export "${name}" ${sig}; the string ABI needs memory, alloc, dealloc and one function per macro`
          : `the module imports watt host functions but does not export "${name}" ${sig}`,
      );
    }
    if (actual !== sig) throw new WasmModuleError(`export "${name}" has signature ${actual}; the ABI needs ${sig}`);
  }

  // Cap the memory: rewrite the memory section with maximum = min(declared, cap).
  const maxPages = Math.min(mem.max ?? capPages, capPages);
  let bytes: Uint8Array = input;
  if (mem.max === undefined || mem.max > capPages) {
    const section = [...encodeU32(1), 0x01, ...encodeU32(mem.min), ...encodeU32(maxPages)];
    const { headerStart, end } = memorySection!;
    bytes = Buffer.concat([input.subarray(0, headerStart), Buffer.from([0x05, ...encodeU32(section.length), ...section]), input.subarray(end)]);
  }
  return { abi, bytes, sha256, functions, signatures, memory: { minPages: mem.min, maxPages } };
}

/** Check that `entry` is exported with the signature its ABI needs for this kind of macro. */
export function checkEntry(m: CheckedModule, entry: string, attribute: boolean): void {
  const actual = m.signatures.get(entry);
  const available = [...m.functions].filter((f) => !['alloc', 'dealloc', 'raw_to_token_stream', 'token_stream_into_raw'].includes(f) && !f.startsWith('__'));
  if (actual === undefined) {
    throw new WasmModuleError(`the module exports no function "${entry}"; its macro entries are: ${available.length ? available.join(', ') : '(none)'}`);
  }
  const expected =
    m.abi === 'string' ? (attribute ? '(i32, i32, i32, i32) -> i64' : '(i32, i32) -> i64') : attribute ? '(i32, i32) -> i32' : '(i32) -> i32';
  if (actual !== expected) {
    const kind = attribute ? 'an attribute macro (--attr given)' : 'a derive or function-like macro';
    throw new WasmModuleError(`"${entry}" has signature ${actual}; as ${kind} with the ${m.abi} ABI it must be ${expected}`);
  }
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(bytes % (1024 * 1024) === 0 ? 0 : 1)} MiB`;
}
