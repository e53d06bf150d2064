// Content-defined chunking for SplitBlob: FastCDC (Xia et al., 2020) with normalized chunking,
// cut points found by a gear rolling hash, so an edit in a large blob changes only the chunks
// around it and the rest are shared with the previous version.
//
// Our gear table is derived from CDC_SEED with SplitMix64. Other implementations (Bazel's, the
// fastcdc crate) use a fixed table of their own, so their cut points differ from ours: SplitBlob
// therefore answers `chunking_function: UNKNOWN` ("the chunks concatenate to the blob", all a
// client may rely on) and Capabilities announces no FastCDC parameters. Splicing takes chunks of
// any origin.

/** Average chunk size: chunks are between a quarter and four times this. */
export const CDC_AVERAGE_CHUNK_BYTES = 512 * 1024;
export const CDC_SEED = 0x5245_4150; // "REAP"

/** Blobs up to this size are one chunk: splitting them saves nothing. */
export const CDC_MIN_SPLIT_BYTES = CDC_AVERAGE_CHUNK_BYTES;

const MASK64 = (1n << 64n) - 1n;

/** 256 pseudo-random 32-bit values from `seed` (SplitMix64, upper halves). */
function gearTable(seed: number): Uint32Array {
  const table = new Uint32Array(256);
  let state = BigInt(seed);
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    z = z ^ (z >> 31n);
    table[i] = Number(z >> 32n);
  }
  return table;
}

const GEAR = gearTable(CDC_SEED);

/**
 * A mask of the `bits` highest bits: with the hash shifted left once per byte, they depend on the
 * last 32 bytes, the window the cut point is chosen by.
 */
function topBits(bits: number): number {
  return ((2 ** bits - 1) * 2 ** (32 - bits)) >>> 0;
}

export interface ChunkerOptions {
  averageBytes?: number;
}

/**
 * Where to cut `data` into chunks: the end offset of each chunk (the last is data.length).
 * Normalization level 2: a stricter mask before the average size, a looser one after.
 */
export function chunkBoundaries(data: Uint8Array, opts: ChunkerOptions = {}): number[] {
  const avg = opts.averageBytes ?? CDC_AVERAGE_CHUNK_BYTES;
  const min = Math.floor(avg / 4);
  const max = avg * 4;
  const bits = Math.round(Math.log2(avg));
  const maskS = topBits(bits + 2);
  const maskL = topBits(bits - 2);
  const cuts: number[] = [];
  let start = 0;
  while (start < data.length) {
    const remaining = data.length - start;
    if (remaining <= min) {
      cuts.push(data.length);
      break;
    }
    const end = Math.min(remaining, max);
    const normal = Math.min(end, avg);
    let hash = 0;
    let i = min;
    let cut = end;
    for (; i < normal; i++) {
      hash = ((hash << 1) + GEAR[data[start + i]!]!) >>> 0;
      if ((hash & maskS) === 0) {
        cut = i + 1;
        break;
      }
    }
    if (cut === end && i >= normal) {
      for (; i < end; i++) {
        hash = ((hash << 1) + GEAR[data[start + i]!]!) >>> 0;
        if ((hash & maskL) === 0) {
          cut = i + 1;
          break;
        }
      }
    }
    start += cut;
    cuts.push(start);
  }
  return cuts;
}
