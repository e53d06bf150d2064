// ByteStream: streaming reads and resumable writes of single blobs, plain or zstd-compressed.
//
// Uploads are resumable: the state of an unfinished upload (keyed by its resource name, which
// holds a client-chosen UUID) outlives the stream, so a client whose connection broke can ask
// QueryWriteStatus and continue from `committed_size`. Idle uploads are dropped after a while.
import type * as grpc from '@grpc/grpc-js';
import { aborted, cancelled, invalidArgument, outOfRange, ReapiError } from '../../common/errors.ts';
import { clientStream, limitReadAhead, METHOD_OVERRIDES, serverStream, unary, type MethodOverrides } from '../../common/grpc.ts';
import { parseReadResource, parseWriteResource, type BlobResource } from '../../common/resource-name.ts';
import { ZstdDecoder, ZstdEncoder, ZstdLimitError } from '../../common/zstd.ts';
import { root, serviceDefinitions, type ByteStreamHandlers, type MessageInput, type MessageOutput } from '../../protos/index.ts';
import type { BlobChunkReader, BlobWriter } from '../blob-store.ts';
import type { StorageContext } from './storage-context.ts';

/** Largest data chunk sent in one ReadResponse. */
const READ_CHUNK = 1024 * 1024;
const UPLOAD_IDLE_MS = 10 * 60 * 1000;
/** WriteRequests grpc-js may hold ahead of the handler: enough to overlap, few enough to die young. */
const WRITE_READ_AHEAD = 2;

interface Upload {
  resource: BlobResource;
  writer: BlobWriter;
  decoder?: ZstdDecoder;
  /** Bytes of the resource received so far (compressed bytes for compressed-blobs). */
  received: number;
  active: boolean;
  lastActivity: number;
}

type WriteRequest = MessageOutput<'WriteRequest'>;
type WriteResponse = MessageInput<'WriteResponse'>;

export function byteStreamService(storage: StorageContext): ByteStreamHandlers & { close(): void; [METHOD_OVERRIDES]: MethodOverrides } {
  const ctx = storage.service('ByteStream');
  const blobsOf = (resource: BlobResource) => storage.stores.resolve(resource.instanceName, resource.digestFunction).blobs;
  const uploads = new Map<string, Upload>();

  const sweeper = setInterval(() => {
    const now = Date.now();
    for (const [name, u] of uploads) {
      if (!u.active && now - u.lastActivity > UPLOAD_IDLE_MS) {
        uploads.delete(name);
        void u.writer.abort();
      }
    }
  }, 60_000);
  sweeper.unref();

  /**
   * An upload whose stream ended before finish_write waits to be resumed: its buffered bytes go
   * to its temp file, and past the server's caps on waiting uploads (count and bytes) the ones
   * idle longest are dropped, so abandoned uploads cannot pin memory, file handles or disk.
   */
  async function park(name: string, upload: Upload): Promise<void> {
    await upload.writer.spill?.();
    const { maxPendingUploads, maxPendingUploadBytes } = storage.config.storage;
    const waiting = [...uploads].filter(([, u]) => !u.active && u !== upload).sort((a, b) => a[1].lastActivity - b[1].lastActivity);
    let count = waiting.length + 1;
    let bytes = waiting.reduce((n, [, u]) => n + u.received, upload.received);
    for (const [other, u] of waiting) {
      if (count <= maxPendingUploads && bytes <= maxPendingUploadBytes) break;
      uploads.delete(other);
      count--;
      bytes -= u.received;
      void u.writer.abort();
      ctx.logger.warn({ resource: other, bytes: u.received }, 'dropped an unfinished upload: too many uploads wait to be resumed (storage.maxPendingUploads, storage.maxPendingUploadBytes)');
    }
    if (uploads.get(name) === upload && (count > maxPendingUploads || bytes > maxPendingUploadBytes)) {
      uploads.delete(name);
      await upload.writer.abort();
    }
  }

  async function openUpload(name: string, offset: number): Promise<Upload> {
    const existing = uploads.get(name);
    if (existing) {
      if (existing.active) throw aborted(`another Write of ${name} is in progress`);
      if (offset === existing.received) return existing;
      if (offset !== 0) {
        throw invalidArgument(`write_offset ${offset} does not continue upload ${name}, which has ${existing.received} bytes`);
      }
      uploads.delete(name);
      await existing.writer.abort();
    } else if (offset !== 0) {
      throw invalidArgument(`write_offset ${offset} for a new upload ${name}; a new upload starts at 0`);
    }
    const resource = parseWriteResource(name);
    const writer = await blobsOf(resource).write(resource.digest);
    const upload: Upload = {
      resource,
      writer,
      // Bounded by the declared size: decompression stops the moment the output passes it.
      decoder: resource.compressor === 'zstd' ? new ZstdDecoder(resource.digest.size_bytes) : undefined,
      received: 0,
      active: false,
      lastActivity: Date.now(),
    };
    uploads.set(name, upload);
    return upload;
  }

  async function append(upload: Upload, data: Buffer): Promise<void> {
    if (!upload.decoder) return upload.writer.append(data);
    const { digest } = upload.resource;
    try {
      // One decompressed slice at a time, each written before the next is made.
      for (const part of upload.decoder.decode(data)) await upload.writer.append(part);
    } catch (err) {
      if (err instanceof ZstdLimitError) throw outOfRange(`zstd data for ${digest.hash} ${err.message}, past the declared size ${digest.size_bytes}`);
      if (err instanceof ReapiError) throw err;
      throw invalidArgument(`zstd data for ${digest.hash} is invalid: ${(err as Error).message}`);
    }
  }

  async function write(call: grpc.ServerReadableStream<WriteRequest, WriteResponse>): Promise<WriteResponse> {
    let name = '';
    let upload: Upload | undefined;
    /** The stream ended cleanly before finish_write: keep the upload so the client can resume it. */
    let resumable = false;
    limitReadAhead(call, WRITE_READ_AHEAD);
    try {
      for await (const req of call as AsyncIterable<WriteRequest>) {
        if (!upload) {
          name = req.resource_name;
          if (!name) throw invalidArgument('the first WriteRequest must name the resource');
          upload = await openUpload(name, req.write_offset);
          upload.active = true;
          if (upload.writer.alreadyExists) {
            // Nothing to receive: answer now (the spec allows it) and let the client stop sending.
            uploads.delete(name);
            ctx.metrics.casBlobOps.inc({ direction: 'write', result: 'exists' });
            return { committed_size: upload.resource.compressor === 'identity' ? upload.resource.digest.size_bytes : -1 };
          }
        } else if (req.resource_name && req.resource_name !== name) {
          throw invalidArgument(`resource_name changed within one Write stream ("${name}" then "${req.resource_name}")`);
        }
        if (req.write_offset !== upload.received) {
          throw invalidArgument(`write_offset ${req.write_offset} does not match the ${upload.received} bytes received so far`);
        }
        await append(upload, req.data);
        upload.received += req.data.length;
        upload.lastActivity = Date.now();
        if (req.finish_write) {
          if (upload.decoder && !upload.decoder.complete) throw invalidArgument('zstd data ends in the middle of a frame');
          await upload.writer.commit();
          uploads.delete(name);
          ctx.metrics.casBytes.inc({ direction: 'write' }, upload.resource.digest.size_bytes);
          ctx.metrics.casBlobOps.inc({ direction: 'write', result: 'ok' });
          return { committed_size: upload.received };
        }
      }
      if (!upload) throw invalidArgument('Write stream carried no request');
      resumable = true;
      throw invalidArgument(`Write stream for ${name} ended without finish_write after ${upload.received} bytes; resume it from there`);
    } catch (err) {
      // Bad data is dropped whole; a broken stream (client gone) keeps its upload for resuming.
      if (upload && uploads.get(name) === upload && !(resumable || call.cancelled || isStreamEnd(err))) {
        uploads.delete(name);
        await upload.writer.abort();
      }
      if (upload?.writer.alreadyExists === false) ctx.metrics.casBlobOps.inc({ direction: 'write', result: 'rejected' });
      throw err;
    } finally {
      if (upload) {
        upload.active = false;
        upload.lastActivity = Date.now();
        if (uploads.get(name) === upload) await park(name, upload).catch((err: unknown) => ctx.logger.warn({ err, resource: name }, 'could not park an unfinished upload'));
      }
    }
  }

  return {
    Read: serverStream(ctx, 'Read', async (req, send, call) => {
      const resource = parseReadResource(req.resource_name);
      const { digest } = resource;
      const blobs = blobsOf(resource);
      if (req.read_offset < 0) throw outOfRange(`read_offset ${req.read_offset} is negative`);
      if (req.read_limit < 0) throw outOfRange(`read_limit ${req.read_limit} is negative`);
      if (req.read_offset > digest.size_bytes) {
        throw outOfRange(`read_offset ${req.read_offset} is past the end of ${digest.hash} (${digest.size_bytes} bytes)`);
      }
      if (resource.compressor !== 'identity' && req.read_limit !== 0) {
        throw invalidArgument('read_limit must be 0 when reading compressed-blobs (REAPI: the limit cannot apply to compressed data)');
      }
      let sent = 0;
      if (resource.compressor === 'identity' && blobs.openReader) {
        sent = await sendFromReader(await blobs.openReader(digest, req.read_offset, req.read_limit), send, call);
      } else {
        const stream = await blobs.read(digest, req.read_offset, req.read_limit);
        const encoder = resource.compressor === 'zstd' ? new ZstdEncoder() : undefined;
        try {
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            sent += chunk.length;
            const parts = encoder ? encoder.push(chunk) : [chunk];
            for (const part of parts) {
              for (let i = 0; i < part.length; i += READ_CHUNK) await send({ data: part.subarray(i, i + READ_CHUNK) });
            }
          }
          if (encoder) for (const part of encoder.push(Buffer.alloc(0), true)) await send({ data: part });
        } finally {
          stream.destroy();
        }
      }
      ctx.metrics.casBytes.inc({ direction: 'read' }, sent);
      ctx.metrics.casBlobOps.inc({ direction: 'read', result: 'ok' });
    }),

    Write: clientStream(ctx, 'Write', write),

    QueryWriteStatus: unary(ctx, 'QueryWriteStatus', async (req) => {
      const upload = uploads.get(req.resource_name);
      if (upload) return { committed_size: upload.received, complete: false };
      const resource = parseWriteResource(req.resource_name);
      if ((await blobsOf(resource).findMissing([resource.digest])).length === 0) {
        return { committed_size: resource.compressor === 'identity' ? resource.digest.size_bytes : -1, complete: true };
      }
      // Unknown upload: the client starts over from 0.
      return { committed_size: 0, complete: false };
    }),

    [METHOD_OVERRIDES]: { Read: { responseSerialize: serializeReadResponse as (msg: unknown) => Buffer } },

    close: () => {
      clearInterval(sweeper);
      for (const u of uploads.values()) void u.writer.abort();
      uploads.clear();
    },
  };
}

function isStreamEnd(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET';
}

// ---------------------------------------------------------------------------------------------
// Read without copies: a blob store that can read into caller buffers (the disk store) fills
// pooled buffers that already hold the ReadResponse encoding, so the serializer hands them to
// grpc-js as they are, and grpc-js's own framing copy is the only one on the way out. A buffer
// goes back to the pool when serialized: grpc-js (1.14) copies the serializer's result into the
// frame before returning from the write. Were that copy ever deferred, the reused buffers would
// corrupt reads, which the integration tests' content checks of multi-megabyte reads would show.

type ReadResponse = MessageInput<'ReadResponse'>;

/** Buffers one Read may have filled and not yet handed to grpc-js. */
const READ_BUFFERS = 4;
/** Room in front of the data for the ReadResponse header: a tag byte and a length varint. */
const HEADROOM = 8;
const PRE_ENCODED: unique symbol = Symbol('ReadResponse encoding');

interface PreEncodedResponse extends ReadResponse {
  [PRE_ENCODED]?: { bytes: Buffer; release(): void };
}

async function sendFromReader(
  reader: BlobChunkReader,
  send: (msg: ReadResponse) => Promise<void>,
  call: grpc.ServerWritableStream<unknown, unknown>,
): Promise<number> {
  const free: Buffer[] = [];
  let allocated = 0;
  let wake: (() => void) | undefined;
  const release = (buf: Buffer) => {
    free.push(buf);
    wake?.();
  };
  let sent = 0;
  try {
    while (reader.remaining > 0) {
      if (free.length === 0 && allocated >= READ_BUFFERS) {
        // Every buffer waits in grpc-js's queue: wait until it has serialized one, or the call
        // is over (a cancelled call serializes nothing more).
        if (!call.cancelled) {
          await new Promise<void>((resolve) => {
            const done = () => {
              wake = undefined;
              call.removeListener('cancelled', done);
              resolve();
            };
            wake = done;
            call.once('cancelled', done);
          });
        }
        if (free.length === 0) throw cancelled('the client cancelled the call');
      }
      const want = Math.min(READ_CHUNK, reader.remaining);
      // Sized to what is left: a small blob (the usual case) gets a small buffer; only a last
      // short chunk of a large one is smaller than READ_CHUNK, so pooled buffers always fit.
      let buf = free.pop();
      if (!buf || buf.length < HEADROOM + want) {
        buf = Buffer.allocUnsafe(HEADROOM + want);
        allocated++;
      }
      const n = await reader.read(buf, HEADROOM, want);
      const start = HEADROOM - headerLength(n);
      writeHeader(buf, start, n);
      const msg: PreEncodedResponse = {
        data: buf.subarray(HEADROOM, HEADROOM + n),
        [PRE_ENCODED]: { bytes: buf.subarray(start, HEADROOM + n), release: () => release(buf) },
      };
      await send(msg);
      sent += n;
    }
  } finally {
    await reader.close();
  }
  return sent;
}

function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** ReadResponse.data's tag and length (the header of a one-field message). */
function headerLength(dataLength: number): number {
  return 1 + varintLength(dataLength);
}

/** ReadResponse.data's key: field number 10, wire type 2 (length-delimited); read from the proto. */
const DATA_KEY = (() => {
  const type = root.lookupType('google.bytestream.ReadResponse');
  const data = type.fields['data'];
  if (!data || data.type !== 'bytes' || Object.keys(type.fields).length !== 1 || data.id >= 16) {
    throw new Error('google.bytestream.ReadResponse is not the one-field message this serializer writes');
  }
  return (data.id << 3) | 2;
})();

function writeHeader(buf: Buffer, at: number, dataLength: number): void {
  buf[at++] = DATA_KEY;
  let n = dataLength;
  while (n >= 0x80) {
    buf[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at] = n;
}

const encodeReadResponse = serviceDefinitions.ByteStream.Read.responseSerialize as (msg: ReadResponse) => Buffer;

/**
 * ReadResponse's serializer: a pre-encoded response as it is (its buffer goes back to its pool:
 * grpc-js copies it into the frame before any other code runs), other ones as tag, length and
 * data in one buffer, which is what protobufjs would write, with less work.
 */
function serializeReadResponse(msg: PreEncodedResponse): Buffer {
  const pre = msg[PRE_ENCODED];
  if (pre) {
    pre.release();
    return pre.bytes;
  }
  const data = msg.data;
  if (!(data instanceof Uint8Array)) return encodeReadResponse(msg);
  const head = headerLength(data.length);
  const out = Buffer.allocUnsafe(head + data.length);
  writeHeader(out, 0, data.length);
  out.set(data, head);
  return out;
}
