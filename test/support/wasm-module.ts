// A tiny WebAssembly assembler for tests: modules built byte by byte (there is no wat2wasm here),
// so hostile macros (endless loops, unbounded memory growth, imports, traps, bad output) and a
// hand-made watt guest can be written in a few lines.

export type ValType = 'i32' | 'i64';
const VT: Record<ValType, number> = { i32: 0x7f, i64: 0x7e };

export function uleb(n: number | bigint): number[] {
  let v = BigInt(n);
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return out;
}

export function sleb(n: number | bigint): number[] {
  let v = BigInt(n);
  const out: number[] = [];
  for (;;) {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    const done = (v === 0n && (b & 0x40) === 0) || (v === -1n && (b & 0x40) !== 0);
    out.push(done ? b : b | 0x80);
    if (done) return out;
  }
}

const str = (s: string): number[] => {
  const b = [...Buffer.from(s, 'utf8')];
  return [...uleb(b.length), ...b];
};
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];

/** Instructions, as byte arrays to concatenate. */
export const op = {
  unreachable: [0x00],
  nop: [0x01],
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  if: [0x04, 0x40],
  end: [0x0b],
  br: (d: number) => [0x0c, ...uleb(d)],
  brIf: (d: number) => [0x0d, ...uleb(d)],
  return: [0x0f],
  call: (f: number) => [0x10, ...uleb(f)],
  drop: [0x1a],
  localGet: (i: number) => [0x20, ...uleb(i)],
  localSet: (i: number) => [0x21, ...uleb(i)],
  i32Load: (offset = 0) => [0x28, 0x02, ...uleb(offset)],
  i32Store: (offset = 0) => [0x36, 0x02, ...uleb(offset)],
  memorySize: [0x3f, 0x00],
  memoryGrow: [0x40, 0x00],
  i32Const: (n: number) => [0x41, ...sleb(n)],
  i64Const: (n: number | bigint) => [0x42, ...sleb(n)],
  i32Eq: [0x46],
  i32Add: [0x6a],
  i64Or: [0x84],
  i64Shl: [0x86],
  i64ExtendI32U: [0xad],
};

export interface FuncDef {
  params: ValType[];
  results: ValType[];
  /** Extra locals (i32). */
  locals?: number;
  body: number[];
  export?: string;
}

export interface ImportDef {
  module: string;
  name: string;
  params: ValType[];
  results: ValType[];
}

export interface ModuleDef {
  imports?: ImportDef[];
  funcs: FuncDef[];
  /** Memory pages; undefined: no memory. */
  memory?: { min: number; max?: number; shared?: boolean; exportAs?: string };
  /** Extra memories (for the "more than one memory" check; not valid wasm 1.0). */
  extraMemories?: number;
  data?: Array<{ offset: number; bytes: Uint8Array | string }>;
}

/** Assemble a module. Function indices: imports first, then `funcs` in order. */
export function assemble(def: ModuleDef): Buffer {
  const types: string[] = [];
  const typeIndex = (params: ValType[], results: ValType[]) => {
    const key = `${params.join(',')}->${results.join(',')}`;
    let i = types.indexOf(key);
    if (i < 0) i = types.push(key) - 1;
    return i;
  };
  const imports = (def.imports ?? []).map((im) => [...str(im.module), ...str(im.name), 0x00, ...uleb(typeIndex(im.params, im.results))]);
  const funcTypes = def.funcs.map((f) => uleb(typeIndex(f.params, f.results)));
  const typeSec = types.map((key) => {
    const [p, r] = key.split('->') as [string, string];
    const ps = p ? (p.split(',') as ValType[]) : [];
    const rs = r ? (r.split(',') as ValType[]) : [];
    return [0x60, ...uleb(ps.length), ...ps.map((t) => VT[t]), ...uleb(rs.length), ...rs.map((t) => VT[t])];
  });
  const importCount = def.imports?.length ?? 0;
  const exports: number[][] = [];
  def.funcs.forEach((f, i) => {
    if (f.export) exports.push([...str(f.export), 0x00, ...uleb(importCount + i)]);
  });
  const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  out.push(...section(1, vec(typeSec)));
  if (imports.length) out.push(...section(2, vec(imports)));
  out.push(...section(3, vec(funcTypes)));
  if (def.memory) {
    const m = def.memory;
    const flags = (m.max !== undefined ? 1 : 0) | (m.shared ? 2 : 0);
    const one = [flags, ...uleb(m.min), ...(m.max !== undefined ? uleb(m.max) : [])];
    const mems = [one, ...Array.from({ length: def.extraMemories ?? 0 }, () => [0x00, 0x01])];
    out.push(...section(5, vec(mems)));
    exports.push([...str(m.exportAs ?? 'memory'), 0x02, 0x00]);
  }
  out.push(...section(7, vec(exports)));
  const bodies = def.funcs.map((f) => {
    const locals = f.locals ? [0x01, ...uleb(f.locals), 0x7f] : [0x00];
    const body = [...locals, ...f.body, 0x0b];
    return [...uleb(body.length), ...body];
  });
  out.push(...section(10, vec(bodies)));
  if (def.data?.length) {
    const segs = def.data.map((d) => {
      const bytes = typeof d.bytes === 'string' ? [...Buffer.from(d.bytes, 'utf8')] : [...d.bytes];
      return [0x00, ...op.i32Const(d.offset), 0x0b, ...uleb(bytes.length), ...bytes];
    });
    out.push(...section(11, vec(segs)));
  }
  return Buffer.from(out);
}

/** `alloc` and `dealloc` of the string ABI: a bump allocator from 64 KiB up (fine for one call). */
export const stringAbiHelpers: FuncDef[] = [
  { params: ['i32'], results: ['i32'], export: 'alloc', body: [...op.i32Const(65536)] },
  { params: ['i32', 'i32'], results: [], export: 'dealloc', body: [] },
];

/** A string-ABI module whose derive entry `name` runs `body` (params: ptr, len; result i64). */
export function stringMacro(name: string, body: number[], extra: Partial<ModuleDef> = {}): Buffer {
  return assemble({
    memory: { min: 2 },
    ...extra,
    funcs: [...stringAbiHelpers, { params: ['i32', 'i32'], results: ['i64'], export: name, body }, ...(extra.funcs ?? [])],
  });
}

/** `(len << 32) | ptr` as an i64 on the stack. */
export function packed(ptr: number, len: number): number[] {
  return op.i64Const((BigInt(len) << 32n) | BigInt(ptr));
}
