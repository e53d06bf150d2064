// An expansion thread: runs one macro expansion at a time, each in a fresh instance of the
// module (compiled modules are cached per thread). The pool terminates the thread on timeout.
// Instantiating costs more than a small expansion, so after each expansion of a string-ABI module
// the thread makes the next fresh instance while it is idle: never called before it is used, it
// is the same state as one made on demand (watt instances are bound to their host, so made then).
import { parentPort } from 'node:worker_threads';
import type { ExpansionResult, JobMessage, ResultMessage } from './protocol.ts';
import { GuestPanic, WattAbiError, WattHost, expandWatt, type WattExports } from './watt-host.ts';
import { LexError } from './rust-tokens.ts';
import { Wasm, type WasmInstance, type WasmMemory, type WasmModule } from './wasm-api.ts';

const MAX_CACHED_MODULES = 16;
const MAX_SPARE_MEMORY_BYTES = 16 * 1024 * 1024;
const compiled = new Map<string, WasmModule>();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

class NeedModule extends Error {}

function compile(job: JobMessage['job']): WasmModule {
  const hit = compiled.get(job.moduleKey);
  if (hit) {
    compiled.delete(job.moduleKey);
    compiled.set(job.moduleKey, hit);
    return hit;
  }
  if (!job.module) throw new NeedModule();
  const m = new Wasm.Module(job.module);
  compiled.set(job.moduleKey, m);
  if (compiled.size > MAX_CACHED_MODULES) {
    const oldest = compiled.keys().next().value!;
    compiled.delete(oldest);
    spares.delete(oldest);
  }
  return m;
}

/** A never-used instance per module (string ABI), made ahead while the thread was idle. */
const spares = new Map<string, WasmInstance>();

function freshStringInstance(key: string, module: WasmModule): WasmInstance {
  const spare = spares.get(key);
  spares.delete(key);
  return spare ?? new Wasm.Instance(module, {});
}

function makeSpare(key: string): void {
  const module = compiled.get(key);
  if (!module || spares.has(key)) return;
  try {
    const instance = new Wasm.Instance(module, {});
    // Only small ones: a spare's memory is held while idle.
    const memory = instance.exports.memory as WasmMemory | undefined;
    if (memory && memory.buffer.byteLength <= MAX_SPARE_MEMORY_BYTES) spares.set(key, instance);
  } catch {
    // e.g. a start function that traps: the next expansion instantiates (and reports) it itself
  }
}

class BadOutput extends Error {}

interface StringExports {
  memory: WasmMemory;
  alloc: (len: number) => number;
  [entry: string]: unknown;
}

function expandString(exports: StringExports, entry: string, inputs: readonly string[]): string {
  const args: number[] = [];
  for (const text of inputs) {
    const bytes = Buffer.from(text, 'utf8');
    const ptr = exports.alloc(bytes.length) >>> 0;
    const mem = new Uint8Array(exports.memory.buffer);
    if (ptr + bytes.length > mem.length) throw new BadOutput(`alloc(${bytes.length}) returned ${ptr}, outside the module's ${mem.length}-byte memory`);
    mem.set(bytes, ptr);
    args.push(ptr, bytes.length);
  }
  const packed = (exports[entry] as (...a: number[]) => bigint)(...args);
  const word = BigInt.asUintN(64, packed);
  const len = Number(word >> 32n);
  const ptr = Number(word & 0xffffffffn);
  const mem = new Uint8Array(exports.memory.buffer);
  if (ptr + len > mem.length) {
    throw new BadOutput(`the macro returned output at ${ptr}..${ptr + len} (len << 32 | ptr = 0x${word.toString(16)}), outside its ${mem.length}-byte memory`);
  }
  const out = mem.subarray(ptr, ptr + len);
  try {
    return strictUtf8.decode(out);
  } catch {
    let valid = 0;
    // Find the first offending byte for the message.
    for (let lo = 0, hi = out.length; lo < hi; ) {
      const mid = (lo + hi + 1) >> 1;
      try {
        strictUtf8.decode(out.subarray(0, mid));
        valid = mid;
        lo = mid;
      } catch {
        hi = mid - 1;
      }
    }
    throw new BadOutput(`the macro's output (${len} bytes) is not valid UTF-8: the first invalid byte is near offset ${valid} (0x${(out[valid] ?? 0).toString(16)})`);
  }
}

/** "unreachable" plus where, from a trap's stack (wasm frames only). */
function trapText(err: Error): string {
  const frames = (err.stack ?? '')
    .split('\n')
    .filter((l) => l.includes('wasm://') || l.includes('wasm-function'))
    .slice(0, 3)
    .map((l) => l.trim().replace(/^at /, ''));
  return frames.length ? `${err.message} (in ${frames.join(' <- ')})` : err.message;
}

function run(job: JobMessage['job']): ExpansionResult | 'need-module' {
  const started = performance.now();
  let module: WasmModule;
  try {
    module = compile(job);
  } catch (err) {
    if (err instanceof NeedModule) return 'need-module';
    return { ok: false, kind: 'bad-module', message: `the engine rejected the module: ${(err as Error).message}` };
  }
  const watt = job.abi === 'string' ? undefined : new WattHost();
  let memory: WasmMemory | undefined;
  const memoryBytes = () => memory?.buffer.byteLength ?? 0;
  try {
    const instance = watt ? new Wasm.Instance(module, watt.imports(job.abi)) : freshStringInstance(job.moduleKey, module);
    memory = instance.exports.memory as WasmMemory;
    let output: string;
    if (watt) {
      watt.attach(memory);
      output = expandWatt(watt, instance.exports as unknown as WattExports, job.entry, job.inputs);
    } else {
      output = expandString(instance.exports as unknown as StringExports, job.entry, job.inputs);
    }
    return { ok: true, output, memoryBytes: memoryBytes(), elapsedMs: performance.now() - started };
  } catch (err) {
    const used = memoryBytes();
    if (err instanceof BadOutput || err instanceof WattAbiError) return { ok: false, kind: 'bad-output', message: err.message, memoryBytes: used };
    if (err instanceof LexError) return { ok: false, kind: 'bad-input', message: `the input is not valid Rust tokens: ${err.message}`, memoryBytes: used };
    if (err instanceof GuestPanic) return { ok: false, kind: 'panic', message: err.message, memoryBytes: used };
    if (err instanceof RangeError && /call stack/i.test(err.message)) {
      return { ok: false, kind: 'panic', message: `stack overflow (${err.message})`, memoryBytes: used };
    }
    if (err instanceof RangeError && /memory/i.test(err.message)) {
      return { ok: false, kind: 'memory-limit', message: `${err.message}`, memoryBytes: used };
    }
    if (err instanceof Wasm.RuntimeError) {
      // A Rust macro that cannot grow its memory aborts, which traps: when the memory had grown to
      // near the cap, that was the cause.
      if (used >= job.memoryCapBytes / 4 && /unreachable|out of bounds/.test(err.message)) {
        return { ok: false, kind: 'memory-limit', message: `trapped (${trapText(err)}) with its memory grown to ${mib(used)} of its ${mib(job.memoryCapBytes)} cap`, memoryBytes: used };
      }
      return { ok: false, kind: 'panic', message: trapText(err), memoryBytes: used };
    }
    if (err instanceof Wasm.LinkError || err instanceof Wasm.CompileError) {
      return { ok: false, kind: 'bad-module', message: `the engine rejected the module: ${err.message}` };
    }
    if (err instanceof TypeError) return { ok: false, kind: 'bad-output', message: `the module does not follow the ABI: ${err.message}`, memoryBytes: used };
    return { ok: false, kind: 'crashed', message: `expansion failed on the host: ${(err as Error).stack ?? String(err)}` };
  }
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

parentPort!.on('message', (msg: JobMessage) => {
  const result = run(msg.job);
  const reply: ResultMessage = result === 'need-module' ? { id: msg.id, needModule: true } : { id: msg.id, result };
  parentPort!.postMessage(reply);
  if (msg.job.abi === 'string') setImmediate(() => makeSpare(msg.job.moduleKey));
});
parentPort!.postMessage('ready');
