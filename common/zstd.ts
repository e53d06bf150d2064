// Incremental zstd (de)compression on top of zstd-napi's native binding: synchronous per chunk, so
// gRPC streams can feed it message by message with natural backpressure.
import binding from 'zstd-napi/binding.js';

const OUT_CHUNK = 256 * 1024;

/** Decompressed output passed the bound the decoder was given (a decompression bomb, or a lie about the size). */
export class ZstdLimitError extends Error {
  override name = 'ZstdLimitError';
}

export class ZstdDecoder {
  private readonly ctx = new binding.DCtx();
  private frameDone = true;
  private produced = 0;

  /** `maxOutputBytes`: decompression stops the moment the total output would pass it. */
  constructor(private readonly maxOutputBytes = Number.POSITIVE_INFINITY) {}

  /**
   * Decompress one chunk, yielding the output a slice (at most 256 KiB) at a time, so that a small
   * chunk that expands enormously is never held whole: a consumer that writes each slice before
   * asking for the next holds one slice. Throws ZstdLimitError as soon as the bound is passed.
   */
  *decode(chunk: Uint8Array): Generator<Buffer> {
    let src = chunk;
    for (;;) {
      const dst = Buffer.allocUnsafe(OUT_CHUNK);
      const [ret, produced, consumed] = this.ctx.decompressStream(dst, src);
      src = src.subarray(consumed);
      this.frameDone = ret === 0;
      if (produced > 0) {
        this.produced += produced;
        if (this.produced > this.maxOutputBytes) throw new ZstdLimitError(`decompresses to more than ${this.maxOutputBytes} bytes`);
        yield dst.subarray(0, produced);
      }
      // Done with this chunk once its input is used up and either the output buffer was not
      // filled (nothing is held back) or the frame is complete: calling again then would start
      // looking for the next frame and report the finished one as unfinished.
      if (src.length === 0 && (produced < dst.length || ret === 0)) return;
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
  const dec = new ZstdDecoder(maxBytes);
  const parts = [...dec.decode(data)];
  if (!dec.complete) throw new Error('zstd data ends in the middle of a frame');
  return Buffer.concat(parts);
}
