// ByteStream resource names as REAPI defines them:
//   read:  {instance}/blobs/{hash}/{size}
//          {instance}/compressed-blobs/{compressor}/{hash}/{size}
//   write: {instance}/uploads/{uuid}/blobs/{hash}/{size}[/{metadata...}]
//          {instance}/uploads/{uuid}/compressed-blobs/{compressor}/{hash}/{size}[/...]
// The instance name may be empty or contain slashes. Newer clients may put the digest function
// (e.g. "sha256") before the hash; only SHA-256 is accepted.
import { invalidArgument } from './errors.ts';
import { validateDigest, type Digest } from './digest.ts';

export type Compressor = 'identity' | 'zstd';

export interface BlobResource {
  instanceName: string;
  digest: Digest;
  compressor: Compressor;
  /** Upload id (writes only). */
  uploadId?: string;
}

const COMPRESSORS: Record<string, Compressor> = { identity: 'identity', zstd: 'zstd' };

function parseBlobPart(name: string, parts: string[], start: number): { digest: Digest; compressor: Compressor } {
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
  if (parts[i] === 'sha256') i++;
  else if (parts[i] !== undefined && /^[a-z][a-z0-9]*$/.test(parts[i]!) && !/^[0-9a-f]{64}$/.test(parts[i]!)) {
    throw invalidArgument(`resource name "${name}": unsupported digest function "${parts[i]}" (only sha256)`);
  }
  const hash = parts[i++];
  const size = parts[i++];
  if (hash === undefined || size === undefined || !/^\d+$/.test(size)) {
    throw invalidArgument(`resource name "${name}": expected .../{hash}/{size} with a decimal size`);
  }
  return { digest: validateDigest({ hash, size_bytes: Number(size) }, `resource name "${name}"`), compressor };
}

export function parseReadResource(name: string): BlobResource {
  const parts = name.split('/');
  const at = parts.findIndex((p) => p === 'blobs' || p === 'compressed-blobs');
  if (at < 0) throw invalidArgument(`resource name "${name}" is not {instance}/blobs/{hash}/{size}`);
  const { digest, compressor } = parseBlobPart(name, parts, at);
  return { instanceName: parts.slice(0, at).join('/'), digest, compressor };
}

export function parseWriteResource(name: string): BlobResource {
  const parts = name.split('/');
  const at = parts.indexOf('uploads');
  if (at < 0 || parts[at + 1] === undefined || parts[at + 1] === '') {
    throw invalidArgument(`resource name "${name}" is not {instance}/uploads/{uuid}/blobs/{hash}/{size}`);
  }
  const { digest, compressor } = parseBlobPart(name, parts, at + 2);
  return { instanceName: parts.slice(0, at).join('/'), digest, compressor, uploadId: parts[at + 1] };
}

export function readResourceName(instanceName: string, digest: Digest, compressor: Compressor = 'identity'): string {
  const blob = compressor === 'identity' ? 'blobs' : `compressed-blobs/${compressor}`;
  return `${instanceName ? instanceName + '/' : ''}${blob}/${digest.hash}/${digest.size_bytes}`;
}

export function writeResourceName(instanceName: string, uploadId: string, digest: Digest, compressor: Compressor = 'identity'): string {
  return `${instanceName ? instanceName + '/' : ''}uploads/${uploadId}/${readResourceName('', digest, compressor)}`;
}
