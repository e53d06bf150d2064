// Whole-blob helpers on top of the streaming BlobStore interface, for small blobs (protos,
// batch calls).
import type { Readable } from 'node:stream';
import type { Digest } from '../common/digest.ts';
import type { BlobStore } from './blob-store.ts';

export async function readStream(stream: Readable | AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

export async function readBlob(store: BlobStore, digest: Digest): Promise<Buffer> {
  if (digest.size_bytes === 0) return Buffer.alloc(0);
  return readStream(await store.read(digest));
}

/** Store `data` under `digest` (computed with the store's digest function when omitted); returns the digest. */
export async function putBlob(store: BlobStore, data: Buffer, digest: Digest = store.digestFunction.digestOf(data)): Promise<Digest> {
  const writer = await store.write(digest);
  if (writer.alreadyExists) return digest;
  try {
    await writer.append(data);
    await writer.commit();
  } catch (err) {
    await writer.abort();
    throw err;
  }
  return digest;
}
