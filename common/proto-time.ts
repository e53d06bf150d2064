// google.protobuf.Timestamp and Duration <-> milliseconds.

export interface TimestampLike {
  seconds?: number | string | null;
  nanos?: number | null;
}

export function toTimestamp(ms: number): { seconds: number; nanos: number } {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

/** Milliseconds of a Timestamp or Duration (whole ms, rounded down); undefined when unset. */
export function millisOf(t: TimestampLike | null | undefined): number | undefined {
  return t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : undefined;
}
