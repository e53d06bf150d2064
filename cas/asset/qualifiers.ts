// The qualifiers of Remote Asset requests: which we understand, what they ask for, and which of
// them name the content (the key it is stored under) rather than how to get it (headers).
//
//   checksum.sri           Subresource Integrity: "sha256-BASE64" (several, space-separated);
//                          fetched content must match one, pushed content must match them all
//   bazel.canonical_id     Bazel's cache key of a download: part of the asset's identity
//   http_header:NAME       a header for every URI; http_header_url:N:NAME for the Nth URI only
//   bazel.auth_headers     Bazel's JSON {uri: {header: [values]}} credentials
//
// Anything else is refused with INVALID_ARGUMENT and a BadRequest detail, as the API requires.
import { createHash, type Hash } from 'node:crypto';
import { ReapiError, Status } from '../../common/errors.ts';
import { packAny } from '../../protos/index.ts';

export interface Qualifier {
  name: string;
  value: string;
}

export type SriAlgorithm = 'sha1' | 'sha256' | 'sha384' | 'sha512';
const SRI_ALGORITHMS = new Set<string>(['sha1', 'sha256', 'sha384', 'sha512']);

export interface SriHash {
  algorithm: SriAlgorithm;
  /** Base64 of the digest, as written. */
  base64: string;
}

export interface AssetQualifiers {
  checksums: SriHash[];
  canonicalId?: string;
  /** Headers to send when fetching the URI at `index`. */
  headersFor(index: number, uri: string): Record<string, string>;
  /** The qualifiers that name the content, sorted: with the URI, the key of a stored asset. */
  identity: Qualifier[];
}

/** Hashes content with the SRI algorithms named, for checking it against checksum.sri. */
export function sriHasher(algorithms: readonly SriAlgorithm[]): { update(chunk: Buffer): void; digests(): Map<SriAlgorithm, string> } {
  const hashes = new Map<SriAlgorithm, Hash>(algorithms.map((a) => [a, createHash(a)]));
  return {
    update: (chunk) => {
      for (const h of hashes.values()) h.update(chunk);
    },
    digests: () => new Map([...hashes].map(([a, h]) => [a, h.digest('base64')])),
  };
}

function badQualifier(name: string, why: string): ReapiError {
  return new ReapiError(Status.INVALID_ARGUMENT, `qualifier "${name}" ${why}`, [
    packAny('BadRequest', { field_violations: [{ field: 'qualifiers.name', description: `"${name}" ${why}` }] }),
  ]);
}

export function parseQualifiers(qualifiers: readonly Qualifier[]): AssetQualifiers {
  const checksums: SriHash[] = [];
  let canonicalId: string | undefined;
  const common: Record<string, string> = {};
  const perIndex = new Map<number, Record<string, string>>();
  let authHeaders: Record<string, Record<string, string[]>> = {};
  const identity: Qualifier[] = [];
  const seen = new Set<string>();
  for (const { name, value } of qualifiers) {
    if (seen.has(name)) throw badQualifier(name, 'is given twice (qualifier names must be unique)');
    seen.add(name);
    if (name === 'checksum.sri') {
      for (const token of value.trim().split(/\s+/)) {
        const m = /^([a-z0-9]+)-([A-Za-z0-9+/=]+)$/.exec(token);
        if (!m || !SRI_ALGORITHMS.has(m[1]!)) throw badQualifier(name, `"${token}" is not sha1-, sha256-, sha384- or sha512- followed by base64`);
        checksums.push({ algorithm: m[1] as SriAlgorithm, base64: m[2]! });
      }
      identity.push({ name, value });
    } else if (name === 'bazel.canonical_id') {
      canonicalId = value;
      identity.push({ name, value });
    } else if (name.startsWith('http_header:')) {
      common[name.slice('http_header:'.length)] = value;
    } else if (name.startsWith('http_header_url:')) {
      const m = /^http_header_url:(\d+):(.+)$/.exec(name);
      if (!m) throw badQualifier(name, 'is not http_header_url:INDEX:HEADER');
      const i = Number(m[1]);
      perIndex.set(i, { ...perIndex.get(i), [m[2]!]: value });
    } else if (name === 'bazel.auth_headers') {
      try {
        authHeaders = JSON.parse(value) as typeof authHeaders;
      } catch {
        throw badQualifier(name, 'is not JSON');
      }
    } else {
      throw badQualifier(name, 'is not supported (supported: checksum.sri, bazel.canonical_id, http_header:*, http_header_url:*, bazel.auth_headers)');
    }
  }
  identity.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    checksums,
    ...(canonicalId !== undefined ? { canonicalId } : {}),
    headersFor: (index, uri) => {
      const auth: Record<string, string> = {};
      for (const [header, values] of Object.entries(authHeaders[uri] ?? {})) if (Array.isArray(values) && values.length) auth[header] = values.join(', ');
      return { ...common, ...auth, ...perIndex.get(index) };
    },
    identity,
  };
}
