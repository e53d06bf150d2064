// Incremental zstd (de)compression on top of zstd-napi's native binding: synchronous per chunk, so
// gRPC streams can feed it message by message with natural backpressure.
import binding from 'zstd-napi/binding';

const OUT_CHUNK = 256 * 1024;

export class ZstdDecoder {
  private readonly ctx = new binding.DCtx();
  private frameDone = true;

  /** Decompress one chunk; returns the bytes it produced. */
  push(chunk: Uint8Array): Buffer[] {
    const out: Buffer[] = [];
    let src = chunk;
    for (;;) {
      const dst = Buffer.allocUnsafe(OUT_CHUNK);
      const [ret, produced, consumed] = this.ctx.decompressStream(dst, src);
      if (produced > 0) out.push(dst.subarray(0, produced));
      src = src.subarray(consumed);
      this.frameDone = ret === 0;
      if (src.length === 0 && produced < dst.length) return out;
    }
  }

  /** True when the data so far ended exactly at the end of a zstd frame. */
  get complete(): boolean {
    return this.frameDone;
  }
}

export class ZstdEncoder {
  private readonly ctx = new binding.CCtx();

  constructor(level = 1) {
    this.ctx.setParameter(binding.CParameter.compressionLevel, level);
  }

  /** Compress one chunk; `end` closes the frame. */
  push(chunk: Uint8Array, end = false): Buffer[] {
    const out: Buffer[] = [];
    let src = chunk;
    const directive = end ? binding.EndDirective.end : binding.EndDirective.continue;
    for (;;) {
      const dst = Buffer.allocUnsafe(OUT_CHUNK);
      const [ret, produced, consumed] = this.ctx.compressStream2(dst, src, directive);
      if (produced > 0) out.push(dst.subarray(0, produced));
      src = src.subarray(consumed);
      if (src.length === 0 && (end ? ret === 0 : produced < dst.length)) return out;
    }
  }
}

export function zstdCompress(data: Uint8Array, level = 1): Buffer {
  return Buffer.concat(new ZstdEncoder(level).push(data, true));
}

/** Decompress, refusing output beyond `maxBytes` (a small frame can claim a huge size). */
export function zstdDecompressBounded(data: Uint8Array, maxBytes: number): Buffer {
  const dec = new ZstdDecoder();
  const parts: Buffer[] = [];
  let total = 0;
  // Feed in slices so a decompression bomb is caught after at most one slice of output.
  for (let i = 0; i < data.length || i === 0; i += 64 * 1024) {
    for (const p of dec.push(data.subarray(i, i + 64 * 1024))) {
      total += p.length;
      if (total > maxBytes) throw new Error(`decompresses to more than ${maxBytes} bytes`);
      parts.push(p);
    }
    if (data.length === 0) break;
  }
  if (!dec.complete) throw new Error('zstd data ends in the middle of a frame');
  return Buffer.concat(parts);
}
