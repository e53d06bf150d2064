// Downloads for the Remote Asset API: one URL to a temporary file, hashed as it arrives.
//
// The server fetches what clients name, so it guards against being used to reach what clients
// cannot (server-side request forgery): only http and https; every address a name resolves to is
// checked at connect time (so DNS answers cannot change between check and use) and loopback,
// private, link-local (cloud metadata) and other special networks are refused unless
// `allowPrivateNetworks`; redirects are followed a few times, each one checked again, never from
// https down to http. Size and time are bounded.
import { randomUUID } from 'node:crypto';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { ReapiError, Status } from '../../common/errors.ts';
import type { DigestFunction } from '../../common/digest-function.ts';
import type { Digest } from '../../common/digest.ts';
import { sriHasher, type SriAlgorithm } from './qualifiers.ts';

export interface FetchLimits {
  maxBytes: number;
  timeoutMs: number;
  allowPrivateNetworks: boolean;
  /** Where downloads are written while they arrive. */
  tmpDir: string;
}

export interface Downloaded {
  path: string;
  digest: Digest;
  /** Base64 digests for the SRI algorithms asked for. */
  sri: Map<SriAlgorithm, string>;
  /** Remove the temporary file. */
  discard(): Promise<void>;
}

const MAX_REDIRECTS = 5;

const SPECIAL_NETWORKS = (() => {
  const b = new BlockList();
  for (const [net, bits] of [
    ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
    ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
  ] as const) b.addSubnet(net, bits, 'ipv4');
  for (const [net, bits] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['::ffff:0:0', 96], ['64:ff9b::', 96]] as const) b.addSubnet(net, bits, 'ipv6');
  return b;
})();

export function isSpecialAddress(address: string): boolean {
  const family = isIP(address);
  return family === 0 ? true : SPECIAL_NETWORKS.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

export class FetchError extends ReapiError {}

/** `subject` ("HOST resolves to ADDRESS,", "ADDRESS is") a special address: refused unless allowed. */
function privateAddressRefused(subject: string): FetchError {
  return new FetchError(Status.PERMISSION_DENIED, `${subject} a loopback, private or link-local address; this server fetches from such networks only with assets.allowPrivateNetworks`);
}

/** DNS lookup that refuses special addresses (used by the connection itself, so no rebinding gap). */
function guardedLookup(allowPrivate: boolean): http.RequestOptions['lookup'] {
  return ((hostname: string, options: object, callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const list = addresses as LookupAddress[];
      const bad = allowPrivate ? undefined : list.find((a) => isSpecialAddress(a.address));
      if (bad) {
        return callback(
          privateAddressRefused(`${hostname} resolves to ${bad.address},`),
          [],
        );
      }
      if ((options as { all?: boolean }).all) return callback(null, list);
      callback(null, list[0]!.address, list[0]!.family);
    });
  }) as http.RequestOptions['lookup'];
}

function statusOfHttp(code: number): Status {
  if (code === 404 || code === 410) return Status.NOT_FOUND;
  if (code === 401 || code === 403) return Status.PERMISSION_DENIED;
  if (code === 429) return Status.RESOURCE_EXHAUSTED;
  return Status.UNAVAILABLE;
}

function open(url: URL, headers: Record<string, string>, limits: FetchLimits, signal: AbortSignal): Promise<http.IncomingMessage> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new FetchError(Status.INVALID_ARGUMENT, `${url.protocol} URLs are not fetched (only http and https)`);
  }
  const literal = url.hostname.replace(/^\[|\]$/g, '');
  if (isIP(literal) && !limits.allowPrivateNetworks && isSpecialAddress(literal)) {
    throw privateAddressRefused(`${literal} is`);
  }
  const get = url.protocol === 'https:' ? https.get : http.get;
  return new Promise((resolve, reject) => {
    const req = get(url, { headers: { 'user-agent': 'reapi-remote-asset', ...headers }, lookup: guardedLookup(limits.allowPrivateNetworks), signal }, resolve);
    req.on('error', (err) => reject(err instanceof FetchError ? err : new FetchError(signal.aborted ? Status.DEADLINE_EXCEEDED : Status.UNAVAILABLE, `fetching ${url.href}: ${err.message}`)));
  });
}

/** Download `uri` to a temporary file, hashing it with `fn` and the SRI algorithms named. */
export async function download(uri: string, opts: { headers: Record<string, string>; fn: DigestFunction; sri: SriAlgorithm[]; limits: FetchLimits }): Promise<Downloaded> {
  const { limits } = opts;
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new FetchError(Status.INVALID_ARGUMENT, `"${uri}" is not a URL`);
  }
  const signal = AbortSignal.timeout(limits.timeoutMs);
  let res = await open(url, opts.headers, limits, signal);
  for (let hops = 0; res.statusCode !== undefined && res.statusCode >= 300 && res.statusCode < 400 && res.headers.location; hops++) {
    res.resume();
    if (hops >= MAX_REDIRECTS) throw new FetchError(Status.UNAVAILABLE, `${uri}: more than ${MAX_REDIRECTS} redirects`);
    const next = new URL(res.headers.location, url);
    if (url.protocol === 'https:' && next.protocol !== 'https:') throw new FetchError(Status.PERMISSION_DENIED, `${uri}: redirect from https to ${next.protocol} refused`);
    url = next;
    res = await open(url, opts.headers, limits, signal);
  }
  if (res.statusCode !== 200) {
    res.resume();
    throw new FetchError(statusOfHttp(res.statusCode ?? 0), `${url.href} answered HTTP ${res.statusCode}`);
  }
  const declared = Number(res.headers['content-length'] ?? NaN);
  if (declared > limits.maxBytes) {
    res.destroy();
    throw new FetchError(Status.RESOURCE_EXHAUSTED, `${url.href} is ${declared} bytes, more than this server fetches (${limits.maxBytes}, assets.maxBytes)`);
  }
  const path = join(limits.tmpDir, `asset-${randomUUID()}`);
  const hasher = opts.fn.hasher();
  const sri = sriHasher(opts.sri);
  let size = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      if (size > limits.maxBytes) return done(new FetchError(Status.RESOURCE_EXHAUSTED, `${url.href} is more than ${limits.maxBytes} bytes (assets.maxBytes)`));
      hasher.update(chunk);
      sri.update(chunk);
      done(null, chunk);
    },
  });
  try {
    await pipeline(res, count, createWriteStream(path, { mode: 0o600 }), { signal });
  } catch (err) {
    await rm(path, { force: true });
    if (err instanceof FetchError) throw err;
    throw new FetchError(signal.aborted ? Status.DEADLINE_EXCEEDED : Status.UNAVAILABLE, `fetching ${url.href}: ${(err as Error).message}`);
  }
  return {
    path,
    digest: { hash: hasher.hex(), size_bytes: size },
    sri: sri.digests(),
    discard: () => rm(path, { force: true }),
  };
}
