// The host side of watt's ABI, so that macros compiled for dtolnay's watt run unchanged.
//
// A watt macro imports ten functions from module "watt-0.5" (or "watt-0.4") and exports
// `raw_to_token_stream`, `token_stream_into_raw` and one function per macro. Token streams live
// on the host behind u32 handles; they cross into the guest in a tagged little-endian wire
// format: a stream is its token trees followed by 0; a tree is 1 group (delimiter byte, span
// u32, stream), 2 ident (span u32, len u32, UTF-8), 3 punct (char u32, spacing byte, span u32)
// or 4 literal (span u32, then 0 + len u32 + UTF-8 text, or 1 + a host literal handle u32).
// One expansion: lex the input text, hand each input's handle to raw_to_token_stream, call the
// macro with the guest streams, turn its result back with token_stream_into_raw, print it.
import { LexError, lex, print, type Delimiter, type TokenTree } from './rust-tokens.ts';
import type { WasmImports } from './wasm-api.ts';

/** The guest called print_panic: its panic message, carried out of the wasm call. */
export class GuestPanic extends Error {
  override readonly name = 'GuestPanic';
}

/** The guest broke the ABI (a bad handle, malformed wire bytes): the macro's fault. */
export class WattAbiError extends Error {
  override readonly name = 'WattAbiError';
}

const SENTINEL = 0xffffffff;
/** Every token carries this span handle: spans are not tracked across the host. */
const SPAN = 0;

class Table<T> {
  private readonly items = new Map<number, T>();
  private next = 1;
  constructor(private readonly what: string) {}
  push(v: T): number {
    const h = this.next++;
    this.items.set(h, v);
    return h;
  }
  get(h: number): T {
    const v = this.items.get(h >>> 0);
    if (v === undefined) throw new WattAbiError(`the macro used ${this.what} handle ${h >>> 0}, which the host never gave it`);
    return v;
  }
}

interface Memory {
  buffer: ArrayBuffer;
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export class WattHost {
  readonly streams = new Table<TokenTree[]>('token stream');
  private readonly bytes = new Table<Uint8Array>('bytes');
  private readonly strings = new Table<string>('string');
  private readonly literals = new Table<string>('literal');
  private memory: Memory | undefined;

  /** The import object for `new WebAssembly.Instance(module, host.imports(moduleName))`. */
  imports(moduleName: string): WasmImports {
    const fns: Record<string, (...args: number[]) => number | void> = {
      token_stream_serialize: (h) => this.bytes.push(this.encode(this.streams.get(h))),
      token_stream_deserialize: (ptr, len) => this.streams.push(this.decode(this.read(ptr, len))),
      token_stream_parse: (ptr, len) => {
        try {
          return this.streams.push(lex(this.text(ptr, len, 'token_stream_parse')));
        } catch (err) {
          if (err instanceof LexError) return SENTINEL | 0;
          throw err;
        }
      },
      literal_to_string: (h) => this.strings.push(this.literals.get(h)),
      string_new: (ptr, len) => this.strings.push(this.text(ptr, len, 'string_new')),
      string_len: (h) => utf8.encode(this.strings.get(h)).length,
      string_read: (h, ptr) => this.write(ptr, utf8.encode(this.strings.get(h))),
      bytes_len: (h) => this.bytes.get(h).length,
      bytes_read: (h, ptr) => this.write(ptr, this.bytes.get(h)),
      print_panic: (h) => {
        throw new GuestPanic(this.strings.get(h));
      },
    };
    return { [moduleName]: fns };
  }

  attach(memory: Memory): void {
    this.memory = memory;
  }

  private view(): Uint8Array {
    if (!this.memory) throw new WattAbiError('the macro called a host function before the host had its memory (a start function?)');
    return new Uint8Array(this.memory.buffer);
  }

  private read(ptr: number, len: number): Uint8Array {
    const mem = this.view();
    const p = ptr >>> 0;
    const n = len >>> 0;
    if (p + n > mem.length) throw new WattAbiError(`the macro passed memory ${p}..${p + n}, outside its ${mem.length}-byte memory`);
    return mem.slice(p, p + n);
  }

  private write(ptr: number, data: Uint8Array): void {
    const mem = this.view();
    const p = ptr >>> 0;
    if (p + data.length > mem.length) throw new WattAbiError(`the macro asked for ${data.length} bytes at ${p}, outside its ${mem.length}-byte memory`);
    mem.set(data, p);
  }

  private text(ptr: number, len: number, fn: string): string {
    try {
      return strictUtf8.decode(this.read(ptr, len));
    } catch (err) {
      if (err instanceof WattAbiError) throw err;
      throw new WattAbiError(`the macro passed ${fn} bytes that are not UTF-8`);
    }
  }

  /** Host tokens to wire bytes (literals as host handles, like watt's own runtime). */
  encode(stream: readonly TokenTree[]): Uint8Array {
    const out: number[] = [];
    const u32 = (n: number) => out.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
    const str = (s: string) => {
      const b = utf8.encode(s);
      u32(b.length);
      for (const x of b) out.push(x);
    };
    const walk = (ts: readonly TokenTree[]) => {
      for (const tt of ts) {
        switch (tt.kind) {
          case 'group':
            out.push(1, tt.delimiter);
            u32(SPAN);
            walk(tt.stream);
            break;
          case 'ident':
            out.push(2);
            u32(SPAN);
            str(tt.text);
            break;
          case 'punct':
            out.push(3);
            u32(tt.ch.codePointAt(0)!);
            out.push(tt.joint ? 1 : 0);
            u32(SPAN);
            break;
          case 'literal':
            out.push(4);
            u32(SPAN);
            out.push(1);
            u32(this.literals.push(tt.text));
            break;
        }
      }
      out.push(0);
    };
    walk(stream);
    return Uint8Array.from(out);
  }

  /** Wire bytes from the guest to host tokens. */
  decode(buf: Uint8Array): TokenTree[] {
    let pos = 0;
    const need = (n: number) => {
      if (pos + n > buf.length) throw new WattAbiError('the macro returned a truncated token stream');
    };
    const byte = () => {
      need(1);
      return buf[pos++]!;
    };
    const u32 = () => {
      need(4);
      const v = (buf[pos]! | (buf[pos + 1]! << 8) | (buf[pos + 2]! << 16) | (buf[pos + 3]! << 24)) >>> 0;
      pos += 4;
      return v;
    };
    const str = () => {
      const n = u32();
      need(n);
      const s = buf.subarray(pos, pos + n);
      pos += n;
      try {
        return strictUtf8.decode(s);
      } catch {
        throw new WattAbiError('the macro returned a token that is not UTF-8');
      }
    };
    const stream = (depth: number): TokenTree[] => {
      if (depth > 1000) throw new WattAbiError('the macro returned token groups nested deeper than 1000');
      const out: TokenTree[] = [];
      for (;;) {
        const tag = byte();
        if (tag === 0) return out;
        if (tag === 1) {
          const d = byte();
          u32(); // span
          out.push({ kind: 'group', delimiter: (d <= 2 ? d : 3) as Delimiter, stream: stream(depth + 1) });
        } else if (tag === 2) {
          u32();
          out.push({ kind: 'ident', text: str() });
        } else if (tag === 3) {
          const cp = u32();
          if (cp > 0x10ffff) throw new WattAbiError(`the macro returned a punct with invalid char ${cp}`);
          const joint = byte() !== 0;
          u32();
          out.push({ kind: 'punct', ch: String.fromCodePoint(cp), joint });
        } else {
          u32();
          const kind = byte();
          out.push({ kind: 'literal', text: kind === 0 ? str() : this.literals.get(u32()) });
        }
      }
    };
    const result = stream(0);
    if (pos !== buf.length) throw new WattAbiError(`the macro returned ${buf.length - pos} bytes after the end of its token stream`);
    return result;
  }
}

export interface WattExports {
  memory: { buffer: ArrayBuffer };
  raw_to_token_stream: (raw: number) => number;
  token_stream_into_raw: (stream: number) => number;
  [entry: string]: unknown;
}

/**
 * One expansion with a fresh instance's exports: lex the inputs (throws LexError for input that
 * is not Rust tokens), run the macro, print its tokens.
 */
export function expandWatt(host: WattHost, exports: WattExports, entry: string, inputs: readonly string[]): string {
  const raws = inputs.map((text) => host.streams.push(lex(text)));
  const main = exports[entry] as (...args: number[]) => number;
  const guestStreams = raws.map((raw) => exports.raw_to_token_stream(raw));
  const out = main(...guestStreams);
  const raw = exports.token_stream_into_raw(out);
  return print(host.streams.get(raw));
}
