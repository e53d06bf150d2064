// Promise helpers over grpc-js for REAPI clients: unary calls, server streams, and ByteStream
// reads and writes with flow control. Used by the `reapi` client commands and by the tests.
import type * as grpc from '@grpc/grpc-js';
import type { ByteStreamClient, MessageInput, MessageOutput } from '../protos/index.ts';

// ---------------------------------------------------------------------------
// Calls

/**
 * Promise form of a unary call: `await unary(s.cas, s.cas.FindMissingBlobs, { blob_digests })`.
 * Rejects with the grpc.ServiceError.
 */
export function unary<C extends grpc.Client, Req, Res>(
  client: C,
  method: (this: C, request: Req, callback: grpc.requestCallback<Res>) => grpc.ClientUnaryCall,
  request: Req,
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    method.call(client, request, (err, res) => {
      if (err) reject(err);
      else if (res === undefined) reject(new Error('unary call ended without a response'));
      else resolve(res);
    });
  });
}

/** Every message of a server stream; rejects with the stream's error. */
export async function collect<T>(stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const msg of stream as AsyncIterable<T>) out.push(msg);
  return out;
}

// ---------------------------------------------------------------------------
// ByteStream

type WriteResponse = MessageOutput<'WriteResponse'>;
type WriteRequest = MessageInput<'WriteRequest'>;

/** Bazel's ByteStream chunk size. */
export const BAZEL_CHUNK = 16 * 1024;

export interface WriteOptions {
  /** Bytes per WriteRequest (default 16 KiB, like Bazel). */
  chunkSize?: number;
  /** Set finish_write on the last request (default true). */
  finish?: boolean;
  /** write_offset of the first request (default 0). */
  offset?: number;
}

/** ByteStream.Write of `data` to `resourceName` in chunks; resolves with the WriteResponse. */
export function byteStreamWrite(
  bs: ByteStreamClient,
  resourceName: string,
  data: Buffer,
  opts: WriteOptions = {},
): Promise<WriteResponse> {
  const size = opts.chunkSize ?? BAZEL_CHUNK;
  function* chunks(): Generator<Buffer> {
    for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
  }
  return byteStreamWriteChunks(bs, resourceName, chunks(), { finish: opts.finish, offset: opts.offset });
}

/**
 * ByteStream.Write of a sequence of chunks (each one WriteRequest), honouring flow control. Stops
 * sending when the server answers early (blob already present, or an error).
 */
export async function byteStreamWriteChunks(
  bs: ByteStreamClient,
  resourceName: string,
  chunks: Iterable<Buffer> | AsyncIterable<Buffer>,
  opts: { finish?: boolean; offset?: number } = {},
): Promise<WriteResponse> {
  const finish = opts.finish ?? true;
  let offset = opts.offset ?? 0;
  let settled = false;
  let onSettled: () => void = () => {};
  const settledSignal = new Promise<void>((r) => (onSettled = r));
  // Assigned synchronously by the Promise executor below.
  let call!: grpc.ClientWritableStream<WriteRequest>;
  const done = new Promise<WriteResponse>((resolve, reject) => {
    call = bs.Write((err, res) => {
      settled = true;
      onSettled();
      if (err) reject(err);
      else if (res === undefined) reject(new Error('Write ended without a response'));
      else resolve(res);
    });
  });
  let first = true;
  const send = async (data: Buffer, last: boolean): Promise<void> => {
    if (settled) return;
    const req: WriteRequest = { write_offset: offset, data, finish_write: last && finish };
    if (first) req.resource_name = resourceName;
    first = false;
    offset += data.length;
    if (!call.write(req)) {
      let onDrain: () => void = () => {};
      const drained = new Promise<void>((r) => (onDrain = r));
      call.once('drain', onDrain);
      await Promise.race([drained, settledSignal]);
      call.removeListener('drain', onDrain);
    }
  };
  let pending: Buffer | undefined;
  try {
    for await (const chunk of chunks) {
      if (settled) break;
      if (pending) await send(pending, false);
      pending = chunk;
    }
    if (!settled) {
      await send(pending ?? Buffer.alloc(0), true);
      call.end();
    }
  } catch (err) {
    done.catch(() => {});
    call.cancel();
    throw err;
  }
  return done;
}

export interface ReadOptions {
  offset?: number;
  limit?: number;
}

/** ByteStream.Read of a whole resource into one Buffer. */
export async function byteStreamRead(bs: ByteStreamClient, resourceName: string, opts: ReadOptions = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  await byteStreamReadEach(bs, resourceName, (data) => parts.push(data), opts);
  return Buffer.concat(parts);
}

/** ByteStream.Read, handing each chunk to `onData` without keeping it; resolves with the byte count. */
export async function byteStreamReadEach(
  bs: ByteStreamClient,
  resourceName: string,
  onData: (data: Buffer) => void,
  opts: ReadOptions = {},
): Promise<number> {
  const stream = bs.Read({ resource_name: resourceName, read_offset: opts.offset ?? 0, read_limit: opts.limit ?? 0 });
  let n = 0;
  for await (const msg of stream as AsyncIterable<MessageOutput<'ReadResponse'>>) {
    n += msg.data.length;
    onData(msg.data);
  }
  return n;
}
