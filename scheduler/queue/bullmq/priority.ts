// REAPI priority onto BullMQ priority.

/** BullMQ's highest priority is 1 and its lowest 2^21-1; 0 would mean "before every prioritized job". */
export const BULL_PRIORITY_MAX = 2 ** 21 - 1;
const BULL_PRIORITY_ZERO = 2 ** 20;

/**
 * REAPI priority (lower runs first, 0 default, any int32) -> BullMQ priority (1 runs first):
 * `p + 2^20`, clamped to [1, 2^21-1], so REAPI priorities in [-1048575, 1048575] keep their order
 * and anything beyond is treated as the extreme. Never 0 (BullMQ's "no priority" jumps the queue).
 */
export function bullPriority(reapiPriority: number): number {
  const p = Math.trunc(Number.isFinite(reapiPriority) ? reapiPriority : 0) + BULL_PRIORITY_ZERO;
  return Math.min(BULL_PRIORITY_MAX, Math.max(1, p));
}
