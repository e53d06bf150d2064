// Saying what went wrong, without the gRPC status machinery, so the command line can use it
// without loading gRPC. common/errors.ts builds on these (its `wrap` keeps a gRPC status).

/** The message of anything thrown. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `err` said in the context it happened in ("context: message"), the original kept as `cause`. */
export function wrapPlain(err: unknown, context: string): Error {
  return new Error(`${context}: ${messageOf(err)}`, { cause: err });
}
