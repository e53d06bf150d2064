// Errors that carry a gRPC status code, so every layer can say precisely what was wrong and the
// service edge turns it into a status without guessing.
import { status as Status, Metadata, type ServiceError } from '@grpc/grpc-js';

export { Status };

export class ReapiError extends Error {
  constructor(
    readonly code: Status,
    message: string,
    /** Extra details (e.g. google.rpc.PreconditionFailure) already packed as Any. */
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'ReapiError';
  }
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
  return { code, details: message, message, metadata };
}

export function statusName(code: Status): string {
  return Status[code] ?? String(code);
}
