// The digest functions this server speaks: SHA-256 (every REAPI client) and BLAKE3 (Bazel's
// --digest_function=blake3, Buck2). Each one knows its hash, its empty blob, how it is named in
// requests (the DigestFunction enum) and in ByteStream resource names, and how to check a digest.
// BLAKE3 comes from @napi-rs/blake-hash: native code, about 5x the speed of SHA-256 here.
import { createHash } from 'node:crypto';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { invalidArgument } from './errors.ts';
import type { Digest } from './digest.ts';

import type { DigestFunctionName } from './digest-function-names.ts';

export { DIGEST_FUNCTION_NAMES, type DigestFunctionName } from './digest-function-names.ts';

/** An incremental hash of one blob. */
export interface Hasher {
  update(data: Buffer): void;
  /** The lowercase hex hash; the hasher is used up. */
  hex(): string;
}

export interface DigestFunction {
  /** As in the DigestFunction enum of requests and capabilities. */
  readonly name: DigestFunctionName;
  /** As in ByteStream resource names ("blobs/blake3/{hash}/{size}"). */
  readonly resourceName: 'sha256' | 'blake3';
  readonly emptyDigest: Digest;
  hasher(): Hasher;
  hash(data: Buffer | string): string;
  digestOf(data: Buffer): Digest;
}

function digestFunction(name: DigestFunctionName, resourceName: 'sha256' | 'blake3', hasher: () => Hasher): DigestFunction {
  const hash = (data: Buffer | string) => {
    const h = hasher();
    h.update(typeof data === 'string' ? Buffer.from(data) : data);
    return h.hex();
  };
  return Object.freeze({
    name,
    resourceName,
    emptyDigest: Object.freeze({ hash: hash(Buffer.alloc(0)), size_bytes: 0 }),
    hasher,
    hash,
    digestOf: (data: Buffer) => ({ hash: hash(data), size_bytes: data.length }),
  });
}

export const SHA256: DigestFunction = digestFunction('SHA256', 'sha256', () => {
  const h = createHash('sha256');
  return { update: (d) => void h.update(d), hex: () => h.digest('hex') };
});

export const BLAKE3: DigestFunction = digestFunction('BLAKE3', 'blake3', () => {
  const h = new Blake3Hasher();
  return { update: (d) => void h.update(d), hex: () => h.digest('hex') };
});

export const DIGEST_FUNCTIONS: Readonly<Record<DigestFunctionName, DigestFunction>> = { SHA256, BLAKE3 };

/** The function named in ByteStream resource names, or undefined when `segment` names none we know. */
export function digestFunctionOfResource(segment: string): DigestFunction | undefined {
  return Object.values(DIGEST_FUNCTIONS).find((f) => f.resourceName === segment);
}

/** The one digest function of the stores a decorator composes (they must agree). */
export function sameFunction(stores: ReadonlyArray<{ digestFunction: DigestFunction }>): DigestFunction {
  const fn = stores[0]?.digestFunction ?? SHA256;
  const other = stores.find((s) => s.digestFunction !== fn);
  if (other) throw new Error(`stores of different digest functions (${fn.name}, ${other.digestFunction.name}) cannot be composed`);
  return fn;
}

/** Whether `d` is the empty blob under any function (stores never hold it; it is always present). */
export function isEmptyBlob(d: Digest): boolean {
  return d.size_bytes === 0 && (d.hash === SHA256.emptyDigest.hash || d.hash === BLAKE3.emptyDigest.hash);
}

/**
 * The function a request asks for: its `digest_function` field, or when that is UNKNOWN (Bazel
 * before 7, Buck2) the instance's default. A function this server does not offer is refused.
 */
export function requestedFunction(field: string | undefined, fallback: DigestFunction, offered: readonly DigestFunctionName[]): DigestFunction {
  if (field === undefined || field === '' || field === 'UNKNOWN') return fallback;
  const known = DIGEST_FUNCTIONS[field as DigestFunctionName];
  if (!known || !offered.includes(known.name)) {
    throw invalidArgument(`digest_function ${field} is not supported by this server (supported: ${offered.join(', ')})`);
  }
  return known;
}
