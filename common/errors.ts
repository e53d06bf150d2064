// Errors that carry a gRPC status code, so every layer can say precisely what was wrong and the
// service edge turns it into a status without guessing.
import { status as Status, Metadata, type ServiceError } from '@grpc/grpc-js';
import { encode, packAny, type Any__Output } from '../protos/index.ts';
import { messageOf } from './error-text.ts';
import type { Digest } from './digest.ts';

export { Status };

export class ReapiError extends Error {
  constructor(
    readonly code: Status,
    message: string,
    /** Structured details (e.g. google.rpc.PreconditionFailure), packed as Any. */
    readonly details: Any__Output[] = [],
  ) {
    super(message);
    this.name = 'ReapiError';
  }
}

export { messageOf };

/**
 * `err` said in the context it happened in ("context: message"), the original kept as `cause`;
 * an error carrying a gRPC status keeps its code and details.
 */
export function wrap(err: unknown, context: string): Error {
  const message = `${context}: ${messageOf(err)}`;
  if (err instanceof ReapiError) return Object.assign(new ReapiError(err.code, message, err.details), { cause: err });
  return new Error(message, { cause: err });
}

export const invalidArgument = (msg: string) => new ReapiError(Status.INVALID_ARGUMENT, msg);
export const notFound = (msg: string) => new ReapiError(Status.NOT_FOUND, msg);
export const outOfRange = (msg: string) => new ReapiError(Status.OUT_OF_RANGE, msg);
export const resourceExhausted = (msg: string) => new ReapiError(Status.RESOURCE_EXHAUSTED, msg);
export const failedPrecondition = (msg: string) => new ReapiError(Status.FAILED_PRECONDITION, msg);
export const permissionDenied = (msg: string) => new ReapiError(Status.PERMISSION_DENIED, msg);
export const dataLoss = (msg: string) => new ReapiError(Status.DATA_LOSS, msg);
export const unavailable = (msg: string) => new ReapiError(Status.UNAVAILABLE, msg);
export const internal = (msg: string) => new ReapiError(Status.INTERNAL, msg);
export const cancelled = (msg: string) => new ReapiError(Status.CANCELLED, msg);
export const unimplemented = (msg: string) => new ReapiError(Status.UNIMPLEMENTED, msg);
export const aborted = (msg: string) => new ReapiError(Status.ABORTED, msg);

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'metadata' in err;
}

/** Map any thrown value to a status code and message; filesystem errors get meaningful codes. */
export function toStatus(err: unknown): { code: Status; message: string } {
  if (err instanceof ReapiError) return { code: err.code, message: err.message };
  if (isServiceError(err)) return { code: err.code, message: err.details || err.message };
  const sys = err as NodeJS.ErrnoException;
  if (sys && typeof sys.code === 'string') {
    if (sys.code === 'ENOSPC' || sys.code === 'EDQUOT') {
      return { code: Status.RESOURCE_EXHAUSTED, message: `storage is full: ${sys.message}` };
    }
    if (sys.code === 'ENOENT') return { code: Status.NOT_FOUND, message: sys.message };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: Status.INTERNAL, message };
}

/** The error object grpc-js expects in a callback or `emit('error')`. */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const { code, message } = toStatus(err);
  const metadata = new Metadata();
  if (err instanceof ReapiError && err.details.length > 0) {
    metadata.set('grpc-status-details-bin', encode('Status', { code, message, details: err.details }));
  }
  return { code, details: message, message, metadata };
}

/**
 * FAILED_PRECONDITION for blobs a request needs but the CAS lacks, in the form REAPI clients act on
 * (they upload the blobs and retry): a PreconditionFailure with one MISSING violation per blob.
 */
export function missingBlobs(digests: Digest[], what: string): ReapiError {
  const list = digests.map((d) => `blobs/${d.hash}/${d.size_bytes}`);
  const shown = list.slice(0, 10).join(', ') + (list.length > 10 ? `, and ${list.length - 10} more` : '');
  return new ReapiError(Status.FAILED_PRECONDITION, `${what}: ${list.length} blob(s) missing from the CAS: ${shown}`, [
    packAny('PreconditionFailure', { violations: list.map((subject) => ({ type: 'MISSING', subject })) }),
  ]);
}

/** A google.rpc.Status for an error, with its details (for ExecuteResponse.status, Operation.error). */
export function toRpcStatus(err: unknown): { code: number; message: string; details: Any__Output[] } {
  const { code, message } = toStatus(err);
  return { code, message, details: err instanceof ReapiError ? err.details : [] };
}

export function statusName(code: Status): string {
  return Status[code] ?? String(code);
}
