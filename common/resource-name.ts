// ByteStream resource names as REAPI defines them:
//   read:  {instance}/blobs/[{digest_function}/]{hash}/{size}
//          {instance}/compressed-blobs/{compressor}/[{digest_function}/]{hash}/{size}
//   write: {instance}/uploads/{uuid}/blobs/[{digest_function}/]{hash}/{size}[/{metadata...}]
//          {instance}/uploads/{uuid}/compressed-blobs/{compressor}/[{digest_function}/]{hash}/{size}[/...]
// The instance name may be empty or contain slashes. Without a digest function segment the
// blob is of the instance's default function (SHA-256 unless configured): clients that predate
// the segment (Bazel before 7, Buck2) never send it.
import { invalidArgument } from './errors.ts';
import { validateDigest, type Digest } from './digest.ts';
import { BLAKE3, digestFunctionOfResource, SHA256, type DigestFunction } from './digest-function.ts';

export type Compressor = 'identity' | 'zstd';

export interface BlobResource {
  instanceName: string;
  digest: Digest;
  compressor: Compressor;
  /** The function the name gives; undefined when it names none (the instance's default applies). */
  digestFunction?: DigestFunction;
  /** Upload id (writes only). */
  uploadId?: string;
}

const COMPRESSORS: Record<string, Compressor> = { identity: 'identity', zstd: 'zstd' };

function parseBlobPart(name: string, parts: string[], start: number): Omit<BlobResource, 'instanceName' | 'uploadId'> {
  let i = start;
  const kind = parts[i++];
  let compressor: Compressor = 'identity';
  if (kind === 'compressed-blobs') {
    const c = parts[i++] ?? '';
    const known = COMPRESSORS[c];
    if (!known) throw invalidArgument(`resource name "${name}": unsupported compressor "${c}" (supported: zstd)`);
    compressor = known;
  } else if (kind !== 'blobs') {
    throw invalidArgument(`resource name "${name}": expected "blobs" or "compressed-blobs"`);
  }
  let digestFunction: DigestFunction | undefined;
  const segment = parts[i];
  if (segment !== undefined && /^[a-z][a-z0-9]*$/.test(segment) && !/^[0-9a-f]{64}$/.test(segment)) {
    digestFunction = digestFunctionOfResource(segment);
    if (!digestFunction) throw invalidArgument(`resource name "${name}": unsupported digest function "${segment}" (supported: sha256, blake3)`);
    i++;
  }
  const hash = parts[i++];
  const size = parts[i++];
  if (hash === undefined || size === undefined || !/^\d+$/.test(size)) {
    throw invalidArgument(`resource name "${name}": expected .../{hash}/{size} with a decimal size`);
  }
  // Without a segment the function is the instance's, known to the service: an empty blob's
  // hash is checked against whichever function it is the empty hash of.
  const checkWith = digestFunction ?? (hash === BLAKE3.emptyDigest.hash ? BLAKE3 : SHA256);
  const digest = validateDigest({ hash, size_bytes: Number(size) }, `resource name "${name}"`, checkWith);
  return { digest, compressor, ...(digestFunction ? { digestFunction } : {}) };
}

export function parseReadResource(name: string): BlobResource {
  const parts = name.split('/');
  const at = parts.findIndex((p) => p === 'blobs' || p === 'compressed-blobs');
  if (at < 0) throw invalidArgument(`resource name "${name}" is not {instance}/blobs/{hash}/{size}`);
  return { instanceName: parts.slice(0, at).join('/'), ...parseBlobPart(name, parts, at) };
}

export function parseWriteResource(name: string): BlobResource {
  const parts = name.split('/');
  const at = parts.indexOf('uploads');
  if (at < 0 || parts[at + 1] === undefined || parts[at + 1] === '') {
    throw invalidArgument(`resource name "${name}" is not {instance}/uploads/{uuid}/blobs/{hash}/{size}`);
  }
  return { instanceName: parts.slice(0, at).join('/'), ...parseBlobPart(name, parts, at + 2), uploadId: parts[at + 1]! };
}

/** A read name; the digest function is written out unless it is SHA-256 (understood by every server). */
export function readResourceName(instanceName: string, digest: Digest, compressor: Compressor = 'identity', fn: DigestFunction = SHA256): string {
  const blob = compressor === 'identity' ? 'blobs' : `compressed-blobs/${compressor}`;
  const segment = fn === SHA256 ? '' : `${fn.resourceName}/`;
  return `${instanceName ? instanceName + '/' : ''}${blob}/${segment}${digest.hash}/${digest.size_bytes}`;
}

export function writeResourceName(instanceName: string, uploadId: string, digest: Digest, compressor: Compressor = 'identity', fn: DigestFunction = SHA256): string {
  return `${instanceName ? instanceName + '/' : ''}uploads/${uploadId}/${readResourceName('', digest, compressor, fn)}`;
}
