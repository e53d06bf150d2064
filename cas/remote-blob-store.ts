// A BlobStore on a storage node (`reapi cas`) over gRPC, so the scheduler and workers can serve or
// use the CAS of a fleet through the same seam as a local store.
//
// - findMissing: FindMissingBlobs, in chunks of `findMissingChunk` digests sent concurrently.
// - read: ByteStream.Read, streamed with backpressure (the gRPC stream is paused while the
//   consumer is behind). The promise settles on the first data (or the end), so NOT_FOUND and
//   OUT_OF_RANGE reject `read()` itself, as the seam requires. A short stream is DATA_LOSS.
// - write: blobs under `batchUploadBytes` are buffered and sent with one BatchUpdateBlobs at
//   commit; larger ones stream over one ByteStream.Write per writer, in chunks of up to 1 MiB,
//   the last one with finish_write at commit. The node checks size and hash; a mismatch comes
//   back as its INVALID_ARGUMENT. (Measured on one host: a 4 KiB blob takes ~25% less time with
//   BatchUpdateBlobs than with a ByteStream.Write.)
// - alreadyExists: blobs of `existenceCheckBytes` (1 MiB) or more ask FindMissingBlobs at
//   `write()` time, so a caller (e.g. a proxying ByteStream service) can skip receiving and
//   sending them. One FindMissingBlobs costs about as much as uploading a small blob, and most
//   writes are of blobs the client just found missing, so smaller blobs are simply sent. If the
//   node answers a Write early with committed_size == size (it has the blob), the rest is
//   dropped and commit succeeds. `abort()` cancels the Write call.
// - Errors are ReapiErrors with the node's status code, prefixed with its address; a node that
//   is down gives UNAVAILABLE.
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';
import { digestKey, isEmptyDigest, type Digest } from '../common/digest.ts';
import { dataLoss, internal, outOfRange, ReapiError, type Status } from '../common/errors.ts';
import { readResourceName, writeResourceName } from '../common/resource-name.ts';
import type { MessageInput, MessageOutput } from '../protos/index.ts';
import { SHA256, type DigestFunction } from '../common/digest-function.ts';
import type { BlobStore, BlobWriter } from './blob-store.ts';
import { ExistingBlobWriter, SizeCheckedBlobWriter } from './checked-writer.ts';
import { remoteError, startCall, unaryCall, type StorageClients } from './grpc-clients.ts';

export interface RemoteBlobStoreOptions {
  /** REAPI instance name sent with every call (default ''). */
  instanceName?: string;
  /** The digest function of the blobs, sent with every call (default SHA-256). */
  digestFunction?: DigestFunction;
  /** Digests per FindMissingBlobs call (default 10 000). */
  findMissingChunk?: number;
  /** Blobs smaller than this are uploaded with BatchUpdateBlobs at commit (default 1 MiB; 0 = never). */
  batchUploadBytes?: number;
  /** Blobs of at least this size are looked up at `write()` time (default 1 MiB; Infinity = never). */
  existenceCheckBytes?: number;
  /** Largest data chunk per WriteRequest (default 1 MiB). */
  writeChunkBytes?: number;
  /** Deadline of unary calls in ms (default 60 s); streams have none (keepalive finds dead peers). */
  callTimeoutMs?: number;
}

type ReadResponse = MessageOutput<'ReadResponse'>;
type WriteRequest = MessageInput<'WriteRequest'>;
type WriteResponse = MessageOutput<'WriteResponse'>;

const MiB = 1024 * 1024;

export class RemoteBlobStore implements BlobStore {
  readonly instanceName: string;
  readonly digestFunction: DigestFunction;
  readonly address: string;
  private readonly findMissingChunk: number;
  private readonly batchUploadBytes: number;
  private readonly existenceCheckBytes: number;
  private readonly writeChunkBytes: number;
  private readonly callTimeoutMs: number;

  constructor(private readonly clients: StorageClients, opts: RemoteBlobStoreOptions = {}) {
    this.address = clients.address;
    this.instanceName = opts.instanceName ?? '';
    this.digestFunction = opts.digestFunction ?? SHA256;
    this.findMissingChunk = Math.max(1, opts.findMissingChunk ?? 10_000);
    this.batchUploadBytes = opts.batchUploadBytes ?? MiB;
    this.existenceCheckBytes = opts.existenceCheckBytes ?? MiB;
    this.writeChunkBytes = Math.max(1, opts.writeChunkBytes ?? MiB);
    this.callTimeoutMs = opts.callTimeoutMs ?? 60_000;
  }

  private unaryOptions(): grpc.CallOptions {
    return { deadline: Date.now() + this.callTimeoutMs };
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    const ask = digests.filter((d) => !isEmptyDigest(d));
    if (ask.length === 0) return [];
    const chunks: Digest[][] = [];
    for (let i = 0; i < ask.length; i += this.findMissingChunk) chunks.push(ask.slice(i, i + this.findMissingChunk));
    const answers = await Promise.all(
      chunks.map((blob_digests) =>
        unaryCall<MessageOutput<'FindMissingBlobsResponse'>>(this.address, (cb) =>
          this.clients.cas.FindMissingBlobs({ instance_name: this.instanceName, blob_digests, digest_function: this.digestFunction.name }, this.unaryOptions(), cb),
        ),
      ),
    );
    const missing = new Set<string>();
    for (const a of answers) for (const d of a.missing_blob_digests) missing.add(digestKey(d));
    // The caller's digests in the caller's order, whatever order the node answered in.
    return ask.filter((d) => missing.has(digestKey(d)));
  }

  async read(digest: Digest, offset = 0, limit = 0): Promise<Readable> {
    if (offset < 0 || limit < 0) throw outOfRange(`read of ${digestKey(digest)}: offset ${offset} / limit ${limit} is negative`);
    if (offset > digest.size_bytes) {
      throw outOfRange(`offset ${offset} is past the end of ${digest.hash} (${digest.size_bytes} bytes)`);
    }
    if (isEmptyDigest(digest)) return Readable.from([], { objectMode: false });
    const remaining = digest.size_bytes - offset;
    const expected = limit > 0 ? Math.min(limit, remaining) : remaining;
    const call = startCall(this.address, () =>
      this.clients.byteStream.Read({
        resource_name: readResourceName(this.instanceName, digest, 'identity', this.digestFunction),
        read_offset: offset,
        read_limit: limit,
      }),
    );
    return streamReadCall(call, expected, digest, this.address);
  }

  async write(digest: Digest): Promise<BlobWriter> {
    if (isEmptyDigest(digest)) return new ExistingBlobWriter(digest);
    if (digest.size_bytes >= this.existenceCheckBytes && (await this.findMissing([digest])).length === 0) {
      return new ExistingBlobWriter(digest);
    }
    if (digest.size_bytes < this.batchUploadBytes) return new BatchBlobWriter(digest, this);
    return new StreamingBlobWriter(digest, this);
  }

  /** @internal One BatchUpdateBlobs of a single blob; the node's per-blob status becomes the error. */
  async batchUpdate(digest: Digest, data: Buffer): Promise<void> {
    const res = await unaryCall<MessageOutput<'BatchUpdateBlobsResponse'>>(this.address, (cb) =>
      this.clients.cas.BatchUpdateBlobs(
        { instance_name: this.instanceName, requests: [{ digest, data }], digest_function: this.digestFunction.name },
        this.unaryOptions(),
        cb,
      ),
    );
    const status = res.responses[0]?.status;
    if (!status) throw internal(`storage node ${this.address}: BatchUpdateBlobs answered without a status for ${digestKey(digest)}`);
    if (status.code !== 0) {
      throw new ReapiError(status.code as Status, `storage node ${this.address}: ${status.message}`, status.details);
    }
  }

  /** @internal Start one ByteStream.Write; `done` gets the node's answer. */
  openWrite(done: (err: ReapiError | null, res?: WriteResponse) => void): grpc.ClientWritableStream<WriteRequest> {
    const call = startCall(this.address, () =>
      this.clients.byteStream.Write((err, res) => done(err ? remoteError(err, this.address) : null, res)),
    );
    call.on('error', () => {}); // the outcome arrives through `done`
    return call;
  }

  /** @internal */
  uploadName(digest: Digest): string {
    return writeResourceName(this.instanceName, randomUUID(), digest, 'identity', this.digestFunction);
  }

  /** @internal */
  get chunkBytes(): number {
    return this.writeChunkBytes;
  }
}

/**
 * The data of a ByteStream.Read as a Readable; resolves once the first bytes (or the end)
 * arrived, rejects when the call fails before that.
 */
function streamReadCall(call: grpc.ClientReadableStream<ReadResponse>, expected: number, digest: Digest, address: string): Promise<Readable> {
  return new Promise<Readable>((resolve, reject) => {
    let received = 0;
    let started = false;
    let finished = false;
    const out = new Readable({
      read: () => {
        call.resume();
      },
      destroy: (err, cb) => {
        if (!finished) {
          finished = true;
          call.cancel();
        }
        cb(err);
      },
    });
    const start = () => {
      if (started) return;
      started = true;
      resolve(out);
    };
    const fail = (err: ReapiError) => {
      if (!started) {
        started = true;
        out.destroy(); // no error: nobody listens yet
        reject(err);
      } else {
        out.destroy(err);
      }
    };
    call.on('data', (msg: ReadResponse) => {
      if (msg.data.length === 0) return;
      received += msg.data.length;
      if (received > expected) {
        fail(dataLoss(`storage node ${address}: read of ${digestKey(digest)} sent more than the ${expected} bytes asked for`));
        return;
      }
      start();
      if (!out.push(msg.data)) call.pause();
    });
    call.on('end', () => {
      finished = true;
      if (received !== expected) {
        fail(dataLoss(`storage node ${address}: read of ${digestKey(digest)} ended after ${received} of ${expected} bytes`));
        return;
      }
      start();
      out.push(null);
    });
    // Always listened to, also after `out` is gone, so a late CANCELLED never goes unhandled.
    call.on('error', (err: unknown) => {
      const wasFinished = finished;
      finished = true;
      if (!wasFinished || !started) fail(remoteError(err, address));
    });
  });
}

/** Size checks here; the storage node checks the hash (hashing locally too would cost CPU for nothing). */
abstract class RemoteBlobWriter extends SizeCheckedBlobWriter {
  constructor(digest: Digest, protected readonly blobStore: RemoteBlobStore) {
    super(digest);
  }
}

/** Small blobs: buffer everything, one BatchUpdateBlobs at commit. */
class BatchBlobWriter extends RemoteBlobWriter {
  private data: Buffer | undefined;

  protected async store(chunk: Buffer): Promise<void> {
    // Copy: the caller (e.g. gRPC) may reuse its buffer.
    this.data ??= Buffer.allocUnsafe(this.digest.size_bytes);
    chunk.copy(this.data, this.written - chunk.length);
  }

  protected async publish(): Promise<void> {
    await this.blobStore.batchUpdate(this.digest, this.data ?? Buffer.alloc(0));
    this.data = undefined;
  }

  protected discard(): void {
    this.data = undefined;
  }
}

type Answer = { ok: true; res: WriteResponse } | { ok: false; err: ReapiError };

/** Large blobs: one ByteStream.Write, opened at the first full chunk. */
class StreamingBlobWriter extends RemoteBlobWriter {
  private call: grpc.ClientWritableStream<WriteRequest> | undefined;
  private answer: Answer | undefined;
  private answered: Promise<void> | undefined;
  private resourceName = '';
  /** The chunk being filled, and how much of it is. */
  private pending: Buffer | undefined;
  private fill = 0;
  /** Bytes handed to the call so far (the next write_offset). */
  private sent = 0;

  private get earlySuccess(): boolean {
    return this.answer?.ok === true && this.answer.res.committed_size === this.digest.size_bytes;
  }

  private open(): grpc.ClientWritableStream<WriteRequest> {
    if (this.call) return this.call;
    this.resourceName = this.blobStore.uploadName(this.digest);
    let settle!: () => void;
    const answered = new Promise<void>((r) => (settle = r));
    const call = this.blobStore.openWrite((err, res) => {
      this.answer = err ? { ok: false, err } : { ok: true, res: res ?? { committed_size: 0 } };
      settle();
    });
    this.answered = answered;
    this.call = call;
    return call;
  }

  protected async store(chunk: Buffer): Promise<void> {
    const size = this.digest.size_bytes;
    let at = 0;
    while (at < chunk.length) {
      this.pending ??= Buffer.allocUnsafe(Math.min(this.blobStore.chunkBytes, size - this.sent));
      const n = chunk.copy(this.pending, this.fill, at);
      this.fill += n;
      at += n;
      // A full chunk goes now, except the last one: it carries finish_write at commit.
      if (this.fill === this.pending.length && this.sent + this.fill < size) {
        const data = this.pending;
        this.pending = undefined;
        this.fill = 0;
        await this.send(data, false);
      }
    }
  }

  private async send(data: Buffer, finish: boolean): Promise<void> {
    const call = this.open();
    if (this.answer) {
      if (!this.answer.ok) throw this.answer.err;
      return; // the node already has the blob: drop the rest
    }
    const req: WriteRequest = { write_offset: this.sent, data, finish_write: finish };
    if (this.sent === 0) req.resource_name = this.resourceName;
    this.sent += data.length;
    const flowing = call.write(req);
    if (finish) call.end();
    if (!flowing && !finish) {
      await new Promise<void>((resolve) => {
        const done = () => {
          call.off('drain', done);
          resolve();
        };
        call.on('drain', done);
        void this.answered?.then(done);
      });
    }
    this.throwIfFailed();
  }

  /** A separate call so TypeScript does not keep `answer` narrowed across an await. */
  private throwIfFailed(): void {
    if (this.answer && !this.answer.ok) throw this.answer.err;
  }

  protected async publish(): Promise<void> {
    if (!this.answer) {
      const last = this.pending ?? Buffer.alloc(0);
      this.pending = undefined;
      await this.send(last.subarray(0, this.fill), true);
    }
    await this.answered;
    const answer = this.answer;
    if (!answer) throw internal(`write of ${digestKey(this.digest)}: no answer from storage node ${this.blobStore.address}`);
    if (!answer.ok) throw answer.err;
    if (answer.res.committed_size !== this.digest.size_bytes) {
      throw dataLoss(
        `storage node ${this.blobStore.address}: Write of ${digestKey(this.digest)} committed ` +
          `${answer.res.committed_size} bytes, not ${this.digest.size_bytes}`,
      );
    }
  }

  protected discard(): void {
    this.pending = undefined;
    if (this.call && !this.answer) this.call.cancel();
  }

  override async append(chunk: Buffer): Promise<void> {
    if (this.earlySuccess && this.state === 'open') {
      // Still enforce the declared size, then ignore the bytes.
      if (this.written + chunk.length > this.digest.size_bytes) return super.append(chunk);
      this.written += chunk.length;
      return;
    }
    return super.append(chunk);
  }
}
