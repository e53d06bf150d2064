// SplitBlob and SpliceBlob (the blob split/splice extension of REAPI): a large blob as the list of
// its chunks, so a client downloads only the chunks it lacks, and a blob assembled from chunks the
// client uploaded, so it uploads only the chunks the CAS lacks.
//
// A spliced blob remembers its chunks (in memory, most recent layouts first): splitting it again
// returns exactly the chunks its client uploaded. Other blobs are cut by content-defined chunking
// (cas/chunking.ts) and the chunks stored as blobs of their own.
import { LRUCache } from 'lru-cache';
import { digestKey, type Digest } from '../common/digest.ts';
import { failedPrecondition, invalidArgument, missingBlobs, resourceExhausted } from '../common/errors.ts';
import { putBlob, readBlob, readStream } from './blob-io.ts';
import type { BlobStore } from './blob-store.ts';
import { chunkBoundaries, CDC_MIN_SPLIT_BYTES } from './chunking.ts';

/** Largest blob SplitBlob cuts here (it is read whole); larger ones are refused with RESOURCE_EXHAUSTED. */
export const MAX_SPLIT_BYTES = 1024 ** 3;
/** Most chunks SpliceBlob takes in one request. */
export const MAX_SPLICE_CHUNKS = 100_000;

export class SplitSplice {
  private readonly layouts = new LRUCache<string, Digest[]>({ max: 10_000 });

  private keyOf(blobs: BlobStore, digest: Digest): string {
    return `${blobs.digestFunction.name}:${digestKey(digest)}`;
  }

  async split(blobs: BlobStore, digest: Digest): Promise<Digest[]> {
    if (digest.size_bytes === 0) return [];
    if ((await blobs.findMissing([digest])).length > 0) throw missingBlobs([digest], 'SplitBlob');
    const known = this.layouts.get(this.keyOf(blobs, digest));
    if (known && (await blobs.findMissing(known)).length === 0) return known;
    if (digest.size_bytes <= CDC_MIN_SPLIT_BYTES) return [digest];
    if (digest.size_bytes > MAX_SPLIT_BYTES) {
      throw resourceExhausted(`SplitBlob: blob ${digestKey(digest)} is larger than the ${MAX_SPLIT_BYTES} bytes this server splits; read it with ByteStream`);
    }
    const data = await readStream(await blobs.read(digest));
    const chunks: Digest[] = [];
    let start = 0;
    for (const end of chunkBoundaries(data)) {
      chunks.push(await putBlob(blobs, data.subarray(start, end)));
      start = end;
    }
    this.layouts.set(this.keyOf(blobs, digest), chunks);
    return chunks;
  }

  async splice(blobs: BlobStore, digest: Digest, chunks: Digest[]): Promise<Digest> {
    if (chunks.length > MAX_SPLICE_CHUNKS) throw invalidArgument(`SpliceBlob: ${chunks.length} chunks, more than the ${MAX_SPLICE_CHUNKS} accepted`);
    const total = chunks.reduce((n, c) => n + c.size_bytes, 0);
    if (total !== digest.size_bytes) {
      throw invalidArgument(`SpliceBlob: the chunks hold ${total} bytes but blob_digest says ${digest.size_bytes}`);
    }
    const missing = await blobs.findMissing(chunks);
    if (missing.length > 0) throw missingBlobs(missing, 'SpliceBlob chunks');
    const writer = await blobs.write(digest);
    if (!writer.alreadyExists) {
      try {
        for (const c of chunks) {
          const data = await readBlob(blobs, c).catch((err: unknown) => {
            throw failedPrecondition(`SpliceBlob: chunk ${digestKey(c)} could not be read: ${(err as Error).message}`);
          });
          await writer.append(data);
        }
        // The writer checks the assembled content against blob_digest: INVALID_ARGUMENT when it differs.
        await writer.commit();
      } catch (err) {
        await writer.abort();
        throw err;
      }
    }
    this.layouts.set(this.keyOf(blobs, digest), chunks);
    return digest;
  }
}
