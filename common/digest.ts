// Digests and their validation. The shortcuts here (sha256, digestOf, EMPTY_DIGEST) are SHA-256,
// for what is keyed by SHA-256 whatever clients use (internal keys, our own clients); code that
// handles client blobs takes the DigestFunction of the request (common/digest-function.ts).
import { createHash } from 'node:crypto';
import { isEmptyBlob, SHA256, type DigestFunction } from './digest-function.ts';
import { invalidArgument } from './errors.ts';

/** A content digest as it appears on the wire (proto field names). */
export interface Digest {
  hash: string;
  size_bytes: number;
}

export const EMPTY_HASH = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
export const EMPTY_DIGEST: Digest = Object.freeze({ hash: EMPTY_HASH, size_bytes: 0 });

// SHA-256 and BLAKE3 hashes both have 64 hex characters.
const HASH_RE = /^[0-9a-f]{64}$/;

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function digestOf(data: Buffer): Digest {
  return { hash: sha256(data), size_bytes: data.length };
}

/** The empty blob (of any digest function): always present, never stored. */
export function isEmptyDigest(d: Digest): boolean {
  return isEmptyBlob(d);
}

/** `hash/size`, the usual short form for logs and keys. */
export function digestKey(d: Digest): string {
  return `${d.hash}/${d.size_bytes}`;
}

/**
 * Check a digest from a client. `what` names the field in the error so the caller can tell which
 * digest was bad (e.g. "blob_digests[3]").
 */
export function validateDigest(
  d: { hash?: string; size_bytes?: number | string } | null | undefined,
  what: string,
  fn: DigestFunction = SHA256,
): Digest {
  if (!d) throw invalidArgument(`${what}: digest is missing`);
  const hash = d.hash ?? '';
  if (!HASH_RE.test(hash)) {
    throw invalidArgument(`${what}: hash "${hash.slice(0, 80)}" is not 64 lowercase hex characters (${fn.name})`);
  }
  const size = Number(d.size_bytes ?? 0);
  if (!Number.isSafeInteger(size) || size < 0) {
    throw invalidArgument(`${what}: size_bytes ${String(d.size_bytes)} is not a non-negative integer`);
  }
  if (size === 0 && hash !== fn.emptyDigest.hash) {
    throw invalidArgument(`${what}: size_bytes is 0 but hash is not the ${fn.name} hash of the empty blob`);
  }
  return { hash, size_bytes: size };
}
