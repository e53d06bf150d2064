// The Remote Asset API (Fetch, Push) over the CAS: Bazel's --experimental_remote_downloader asks
// FetchBlob for every http_archive / http_file, and the server downloads it once for everyone.
//
// FetchBlob: an asset stored earlier (fetched or pushed) under the same URI and identifying
// qualifiers is answered from the CAS; otherwise the URIs are tried in order (cas/asset/
// http-fetcher.ts), the content checked against checksum.sri, stored, and remembered
// (cas/asset/asset-store.ts). Failures of the download itself come back in the response's
// status (NOT_FOUND, PERMISSION_DENIED, ABORTED for a checksum mismatch, ...), as the API says;
// bad requests are the call's INVALID_ARGUMENT. FetchDirectory does the same for tar and tar.gz
// archives, unpacked into a Directory tree. Push records what a URI holds (admins only).
import { createReadStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../common/config.ts';
import { digestKey, validateDigest, type Digest } from '../../common/digest.ts';
import type { DigestFunction } from '../../common/digest-function.ts';
import { failedPrecondition, invalidArgument, missingBlobs, ReapiError, Status, toStatus } from '../../common/errors.ts';
import { millisOf, type TimestampLike } from '../../common/proto-time.ts';
import { unary, type ServiceContext } from '../../common/grpc.ts';
import type { FetchHandlers, MessageInput, PushHandlers } from '../../protos/index.ts';
import type { BlobStore } from '../blob-store.ts';
import type { StoresByFunction } from '../services/storage-context.ts';
import { archiveKind, unpackArchive } from './archive.ts';
import { AssetStore, type AssetKind } from './asset-store.ts';
import { download, type Downloaded, type FetchLimits } from './http-fetcher.ts';
import { parseQualifiers, sriHasher, type AssetQualifiers, type Qualifier, type SriAlgorithm } from './qualifiers.ts';

export interface AssetServiceOptions {
  stores: StoresByFunction;
  config: Config;
  service: (name: string) => ServiceContext;
}

const SRI_STRENGTH: Record<SriAlgorithm, number> = { sha1: 1, sha256: 2, sha384: 3, sha512: 4 };

/** SRI: the content must match one of the hashes of the strongest algorithm given. */
function checkSri(q: AssetQualifiers, got: Map<SriAlgorithm, string>, what: string): void {
  if (q.checksums.length === 0) return;
  const strongest = q.checksums.reduce((a, b) => (SRI_STRENGTH[b.algorithm] > SRI_STRENGTH[a.algorithm] ? b : a)).algorithm;
  const wanted = q.checksums.filter((c) => c.algorithm === strongest);
  const actual = got.get(strongest);
  if (!wanted.some((c) => c.base64 === actual)) {
    throw new ReapiError(Status.ABORTED, `${what}: checksum mismatch: expected ${wanted.map((c) => `${strongest}-${c.base64}`).join(' or ')}, got ${strongest}-${actual}`);
  }
}

async function storeFile(blobs: BlobStore, file: Downloaded): Promise<void> {
  const writer = await blobs.write(file.digest);
  if (writer.alreadyExists) return;
  try {
    for await (const chunk of createReadStream(file.path, { highWaterMark: 1024 * 1024 })) await writer.append(chunk as Buffer);
    await writer.commit();
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

export function assetServices(opts: AssetServiceOptions): { fetch: FetchHandlers; push: PushHandlers } {
  const { stores, config } = opts;
  const assets = new AssetStore(stores);
  const fetchCtx = opts.service('Fetch');
  const pushCtx = opts.service('Push');
  const tmpDir = join(config.dataDir, 'asset-downloads');
  const ready = mkdir(tmpDir, { recursive: true, mode: 0o700 });

  async function fetchAsset(
    kind: AssetKind,
    req: { instance_name: string; uris: string[]; qualifiers: Qualifier[]; digest_function: string; timeout?: TimestampLike | null; oldest_content_accepted?: TimestampLike | null },
  ): Promise<{ status: { code: number; message: string }; uri: string; digest?: Digest; fn: DigestFunction }> {
    if (req.uris.length === 0) throw invalidArgument('uris is empty: name at least one URI of the asset');
    const q = parseQualifiers(req.qualifiers);
    const { blobs, digestFunction: fn } = stores.resolve(req.instance_name, req.digest_function);
    const known = await assets.get(req.instance_name, fn, kind, req.uris, q.identity, millisOf(req.oldest_content_accepted) ?? 0);
    // FindMissingBlobs also renews the lease of what we answer with.
    if (known && (await blobs.findMissing([known.digest])).length === 0) {
      fetchCtx.metrics.assetFetches.inc({ kind, result: 'cached' });
      return { status: { code: 0, message: '' }, uri: known.uri, digest: known.digest, fn };
    }
    await ready;
    const { assets: limits } = config;
    const fetchLimits: FetchLimits = {
      maxBytes: limits.maxBytes,
      timeoutMs: Math.min(millisOf(req.timeout) || limits.timeoutSeconds * 1000, limits.timeoutSeconds * 1000),
      allowPrivateNetworks: limits.allowPrivateNetworks,
      tmpDir,
    };
    let failure = { code: Status.NOT_FOUND as number, message: 'no URI could be fetched', uri: req.uris[0]! };
    for (const [i, uri] of req.uris.entries()) {
      try {
        const file = await download(uri, { headers: q.headersFor(i, uri), fn, sri: q.checksums.map((c) => c.algorithm), limits: fetchLimits });
        try {
          checkSri(q, file.sri, uri);
          let digest: Digest;
          if (kind === 'blob') {
            await storeFile(blobs, file);
            digest = file.digest;
          } else {
            const archive = await archiveKind(file.path);
            if (!archive) throw new ReapiError(Status.ABORTED, `${uri} is not a tar or tar.gz archive, so it cannot be fetched as a directory`);
            digest = await unpackArchive(file.path, archive, blobs);
          }
          await assets.put(req.instance_name, fn, kind, req.uris, q.identity, digest);
          fetchCtx.metrics.assetFetches.inc({ kind, result: 'fetched' });
          fetchCtx.logger.info({ uri, digest: digestKey(digest), kind }, 'asset fetched');
          return { status: { code: 0, message: '' }, uri, digest, fn };
        } finally {
          await file.discard();
        }
      } catch (err) {
        // Download failures (FetchError) and the refusals above are the response's status.
        if (!(err instanceof ReapiError)) throw err;
        failure = { ...toStatus(err), uri };
        fetchCtx.logger.warn({ uri, code: failure.code }, `asset fetch failed: ${failure.message}`);
      }
    }
    fetchCtx.metrics.assetFetches.inc({ kind, result: 'failed' });
    return { status: { code: failure.code, message: failure.message }, uri: failure.uri, fn };
  }

  const fetch: FetchHandlers = {
    FetchBlob: unary(fetchCtx, 'FetchBlob', async (req) => {
      const r = await fetchAsset('blob', req);
      const res: MessageInput<'FetchBlobResponse'> = { status: r.status, uri: r.uri, digest_function: r.fn.name };
      if (r.digest) res.blob_digest = r.digest;
      return res;
    }),
    FetchDirectory: unary(fetchCtx, 'FetchDirectory', async (req) => {
      const r = await fetchAsset('directory', req);
      const res: MessageInput<'FetchDirectoryResponse'> = { status: r.status, uri: r.uri, digest_function: r.fn.name };
      if (r.digest) res.root_directory_digest = r.digest;
      return res;
    }),
  };

  async function pushAsset(
    kind: AssetKind,
    req: { instance_name: string; uris: string[]; qualifiers: Qualifier[]; digest_function: string; expire_at?: TimestampLike | null },
    given: { hash?: string; size_bytes?: number | string } | null | undefined,
  ): Promise<void> {
    if (req.uris.length === 0) throw invalidArgument('uris is empty: name at least one URI of the asset');
    const q = parseQualifiers(req.qualifiers);
    const { blobs, digestFunction: fn } = stores.resolve(req.instance_name, req.digest_function);
    const digest = validateDigest(given, kind === 'blob' ? 'blob_digest' : 'root_directory_digest', fn);
    if ((await blobs.findMissing([digest])).length > 0) throw missingBlobs([digest], `Push${kind === 'blob' ? 'Blob' : 'Directory'}`);
    if (q.checksums.length > 0) {
      if (kind === 'directory') throw failedPrecondition('checksum.sri describes a file; it cannot be checked against a directory');
      // Pushed checksums are checked: a later Fetch that names them gets content that has them.
      const sri = sriHasher(q.checksums.map((c) => c.algorithm));
      for await (const chunk of await blobs.read(digest)) sri.update(chunk as Buffer);
      checkSri(q, sri.digests(), `blob ${digestKey(digest)}`);
    }
    await assets.put(req.instance_name, fn, kind, req.uris, q.identity, digest, millisOf(req.expire_at));
    pushCtx.logger.info({ uris: req.uris, digest: digestKey(digest), kind }, 'asset pushed');
  }

  const push: PushHandlers = {
    PushBlob: unary(pushCtx, 'PushBlob', async (req) => {
      await pushAsset('blob', req, req.blob_digest);
      return {};
    }),
    PushDirectory: unary(pushCtx, 'PushDirectory', async (req) => {
      await pushAsset('directory', req, req.root_directory_digest);
      return {};
    }),
  };
  return { fetch, push };
}
