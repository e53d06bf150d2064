// ByteStream: streaming reads and resumable writes of single blobs, plain or zstd-compressed.
//
// Uploads are resumable: the state of an unfinished upload (keyed by its resource name, which
// holds a client-chosen UUID) outlives the stream, so a client whose connection broke can ask
// QueryWriteStatus and continue from `committed_size`. Idle uploads are dropped after a while.
import type * as grpc from '@grpc/grpc-js';
import { aborted, invalidArgument, outOfRange, toServiceError } from '../../common/errors.ts';
import { beginCall, serverStream, unary } from '../../common/grpc.ts';
import { parseReadResource, parseWriteResource, type BlobResource } from '../../common/resource-name.ts';
import { ZstdDecoder, ZstdEncoder } from '../../common/zstd.ts';
import type { ByteStreamHandlers, MessageInput, MessageOutput } from '../../protos/index.ts';
import type { BlobWriter } from '../blob-store.ts';
import type { StorageContext } from './storage-context.ts';

/** Largest data chunk sent in one ReadResponse. */
const READ_CHUNK = 1024 * 1024;
const UPLOAD_IDLE_MS = 10 * 60 * 1000;

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

export function byteStreamService(storage: StorageContext): ByteStreamHandlers & { close(): void } {
  const ctx = storage.service('ByteStream');
  const { blobs } = storage;
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
    const writer = await blobs.write(resource.digest);
    const upload: Upload = {
      resource,
      writer,
      decoder: resource.compressor === 'zstd' ? new ZstdDecoder() : undefined,
      received: 0,
      active: false,
      lastActivity: Date.now(),
    };
    uploads.set(name, upload);
    return upload;
  }

  async function append(upload: Upload, data: Buffer): Promise<void> {
    if (!upload.decoder) return upload.writer.append(data);
    let parts: Buffer[];
    try {
      parts = upload.decoder.push(data);
    } catch (err) {
      throw invalidArgument(`zstd data for ${upload.resource.digest.hash} is invalid: ${(err as Error).message}`);
    }
    for (const p of parts) await upload.writer.append(p);
  }

  async function write(call: grpc.ServerReadableStream<WriteRequest, WriteResponse>): Promise<WriteResponse> {
    let name = '';
    let upload: Upload | undefined;
    /** The stream ended cleanly before finish_write: keep the upload so the client can resume it. */
    let resumable = false;
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
      }
    }
  }

  return {
    Read: serverStream(ctx, 'Read', async (req, send) => {
      const resource = parseReadResource(req.resource_name);
      const { digest } = resource;
      if (req.read_offset < 0) throw outOfRange(`read_offset ${req.read_offset} is negative`);
      if (req.read_limit < 0) throw outOfRange(`read_limit ${req.read_limit} is negative`);
      if (req.read_offset > digest.size_bytes) {
        throw outOfRange(`read_offset ${req.read_offset} is past the end of ${digest.hash} (${digest.size_bytes} bytes)`);
      }
      if (resource.compressor !== 'identity' && req.read_limit !== 0) {
        throw invalidArgument('read_limit must be 0 when reading compressed-blobs (REAPI: the limit cannot apply to compressed data)');
      }
      const stream = await blobs.read(digest, req.read_offset, req.read_limit);
      const encoder = resource.compressor === 'zstd' ? new ZstdEncoder() : undefined;
      let sent = 0;
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
      ctx.metrics.casBytes.inc({ direction: 'read' }, sent);
      ctx.metrics.casBlobOps.inc({ direction: 'read', result: 'ok' });
    }),

    Write: (call, callback) => {
      const end = beginCall(ctx, 'Write', call);
      write(call).then(
        (res) => {
          end(undefined);
          callback(null, res);
        },
        (err: unknown) => {
          end(err);
          callback(toServiceError(err));
        },
      );
    },

    QueryWriteStatus: unary(ctx, 'QueryWriteStatus', async (req) => {
      const upload = uploads.get(req.resource_name);
      if (upload) return { committed_size: upload.received, complete: false };
      const resource = parseWriteResource(req.resource_name);
      if ((await blobs.findMissing([resource.digest])).length === 0) {
        return { committed_size: resource.compressor === 'identity' ? resource.digest.size_bytes : -1, complete: true };
      }
      // Unknown upload: the client starts over from 0.
      return { committed_size: 0, complete: false };
    }),

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
