// ContentAddressableStorage: FindMissingBlobs, the batch calls and GetTree.
import { isEmptyDigest, digestKey, validateDigest, type Digest } from '../../common/digest.ts';
import { invalidArgument, notFound, toStatus } from '../../common/errors.ts';
import { serverStream, unary } from '../../common/grpc.ts';
import { zstdCompress, zstdDecompressBounded } from '../../common/zstd.ts';
import type { ContentAddressableStorageHandlers, MessageInput } from '../../protos/index.ts';
import { putBlob, readBlob } from '../blob-io.ts';
import { mapLimit } from '../../common/concurrency.ts';
import { walkTree } from '../tree.ts';
import { SplitSplice } from '../split-splice.ts';
import type { StorageContext } from './storage-context.ts';

type BlobResponseStatus = { code: number; message: string };
const OK: BlobResponseStatus = { code: 0, message: '' };

type BatchReadResponse = NonNullable<MessageInput<'BatchReadBlobsResponse'>['responses']>[number];

/** Blobs of one batch request stored or read at once: keeps a 4 MiB batch of tiny blobs from opening thousands of files together. */
const BATCH_PARALLELISM = 32;

/** GetTree pages hold at most this many directories unless the client asks for fewer. */
const DEFAULT_TREE_PAGE = 1000;

export function casService(storage: StorageContext): ContentAddressableStorageHandlers {
  const ctx = storage.service('ContentAddressableStorage');
  const { config } = storage;
  const maxBatch = config.storage.maxBatchTotalSizeBytes;
  const splitSplice = new SplitSplice();

  return {
    // Found blobs get their lease renewed (Build without the Bytes; cas/disk-blob-store.ts).
    FindMissingBlobs: unary(ctx, 'FindMissingBlobs', async (req) => {
      const { blobs, digestFunction } = storage.stores.resolve(req.instance_name, req.digest_function);
      const digests = req.blob_digests.map((d, i) => validateDigest(d, `blob_digests[${i}]`, digestFunction));
      const missing = await blobs.findMissing(digests);
      ctx.metrics.findMissingDigests.inc({ result: 'missing' }, missing.length);
      ctx.metrics.findMissingDigests.inc({ result: 'present' }, digests.length - missing.length);
      return { missing_blob_digests: missing };
    }),

    BatchUpdateBlobs: unary(ctx, 'BatchUpdateBlobs', async (req) => {
      const { blobs, digestFunction } = storage.stores.resolve(req.instance_name, req.digest_function);
      const total = req.requests.reduce((n, r) => n + r.data.length, 0);
      if (total > maxBatch) {
        throw invalidArgument(
          `BatchUpdateBlobs carries ${total} bytes, more than max_batch_total_size_bytes (${maxBatch}); use ByteStream.Write for large blobs`,
        );
      }
      const responses = await mapLimit(req.requests, BATCH_PARALLELISM, async (r, i) => {
          let digest: Digest | undefined;
          try {
            digest = validateDigest(r.digest, `requests[${i}].digest`, digestFunction);
            let data = r.data;
            if (r.compressor === 'ZSTD') data = decompress(data, digest, `requests[${i}]`);
            else if (r.compressor !== 'IDENTITY') throw invalidArgument(`requests[${i}]: unsupported compressor ${r.compressor}`);
            if (data.length !== digest.size_bytes) {
              throw invalidArgument(`requests[${i}]: digest says ${digest.size_bytes} bytes but ${data.length} were sent`);
            }
            await putBlob(blobs, data, digest);
            ctx.metrics.casBytes.inc({ direction: 'write' }, data.length);
            ctx.metrics.casBlobOps.inc({ direction: 'write', result: 'ok' });
            return { digest, status: OK };
          } catch (err) {
            ctx.metrics.casBlobOps.inc({ direction: 'write', result: 'rejected' });
            const status = toStatus(err);
            ctx.logger.warn({ digest: digest && digestKey(digest), code: status.code }, `BatchUpdateBlobs: ${status.message}`);
            return { digest: digest ?? r.digest, status };
          }
      });
      return { responses };
    }),

    BatchReadBlobs: unary(ctx, 'BatchReadBlobs', async (req) => {
      const { blobs, digestFunction } = storage.stores.resolve(req.instance_name, req.digest_function);
      const digests = req.digests.map((d, i) => validateDigest(d, `digests[${i}]`, digestFunction));
      const total = digests.reduce((n, d) => n + d.size_bytes, 0);
      if (total > maxBatch) {
        throw invalidArgument(
          `BatchReadBlobs asks for ${total} bytes, more than max_batch_total_size_bytes (${maxBatch}); use ByteStream.Read for large blobs`,
        );
      }
      const zstd = req.acceptable_compressors.includes('ZSTD');
      const responses = await mapLimit(digests, BATCH_PARALLELISM, async (digest): Promise<BatchReadResponse> => {
          try {
            const data = await readBlob(blobs, digest);
            ctx.metrics.casBytes.inc({ direction: 'read' }, data.length);
            ctx.metrics.casBlobOps.inc({ direction: 'read', result: 'ok' });
            // Compress only when it pays: small blobs rarely shrink enough to matter.
            if (zstd && data.length >= 1024) return { digest, data: zstdCompress(data), compressor: 'ZSTD', status: OK };
            return { digest, data, status: OK };
          } catch (err) {
            const status = toStatus(err);
            ctx.metrics.casBlobOps.inc({ direction: 'read', result: status.code === 5 ? 'missing' : 'error' });
            return { digest, status };
          }
      });
      return { responses };
    }),

    GetTree: serverStream(ctx, 'GetTree', async (req, send) => {
      const { blobs, digestFunction } = storage.stores.resolve(req.instance_name, req.digest_function);
      const root = validateDigest(req.root_digest, 'root_digest', digestFunction);
      if (req.page_size < 0) throw invalidArgument(`page_size ${req.page_size} is negative`);
      let skip = 0;
      if (req.page_token) {
        if (!/^\d+$/.test(req.page_token)) throw invalidArgument(`page_token "${req.page_token}" is not one this server issued`);
        skip = Number(req.page_token);
      }
      if (!isEmptyDigest(root) && (await blobs.findMissing([root])).length > 0) {
        throw notFound(`root directory ${digestKey(root)} not found`);
      }
      const pageSize = req.page_size > 0 ? Math.min(req.page_size, DEFAULT_TREE_PAGE) : DEFAULT_TREE_PAGE;
      // Stateless paging: a token is how many directories of the breadth-first walk came before.
      // Pages are streamed one after another; each names where the next one starts.
      let page: MessageInput<'Directory'>[] = [];
      let bytes = 0;
      let index = 0;
      for await (const { directory, digest } of walkTree(blobs, root)) {
        if (index++ < skip) continue;
        if (page.length >= pageSize || (page.length > 0 && bytes + digest.size_bytes > maxBatch)) {
          await send({ directories: page, next_page_token: String(index - 1) });
          page = [];
          bytes = 0;
        }
        page.push(directory);
        bytes += digest.size_bytes;
      }
      await send({ directories: page, next_page_token: '' });
    }),

    SplitBlob: unary(ctx, 'SplitBlob', async (req) => {
      const { blobs, digestFunction } = storage.stores.resolve(req.instance_name, req.digest_function);
      const digest = validateDigest(req.blob_digest, 'blob_digest', digestFunction);
      // Our chunks only promise to concatenate to the blob (cas/chunking.ts says why).
      return { chunk_digests: await splitSplice.split(blobs, digest), chunking_function: 'UNKNOWN' };
    }),

    SpliceBlob: unary(ctx, 'SpliceBlob', async (req) => {
      const { blobs, digestFunction } = storage.stores.resolve(req.instance_name, req.digest_function);
      const digest = validateDigest(req.blob_digest, 'blob_digest', digestFunction);
      const chunks = req.chunk_digests.map((d, i) => validateDigest(d, `chunk_digests[${i}]`, digestFunction));
      return { blob_digest: await splitSplice.splice(blobs, digest, chunks) };
    }),
  };
}

function decompress(data: Buffer, digest: Digest, what: string): Buffer {
  try {
    return zstdDecompressBounded(data, digest.size_bytes);
  } catch (err) {
    throw invalidArgument(`${what}: zstd data for ${digestKey(digest)} is invalid: ${(err as Error).message}`);
  }
}
