// Who wrote an ActionCache entry: a reapi.v1.Provenance kept in the entry's
// ExecutedActionMetadata.auxiliary_metadata, so it travels with the entry everywhere.
import { packAny, typeUrl, decode, type Any, type Any__Output, type MessageInput, type MessageOutput } from '../protos/index.ts';
import type { ActionResultInput } from './action-cache.ts';

export type Provenance = MessageOutput<'Provenance'>;

const PROVENANCE_URL = typeUrl('Provenance');

const typeUrlOf = (a: Any | Any__Output): string | undefined => ('type_url' in a ? a.type_url : undefined);
const valueOf = (a: Any | Any__Output): Buffer | undefined =>
  'value' in a && a.value ? Buffer.from(a.value as Uint8Array) : undefined;

/** The result with `provenance` recorded (replacing an earlier record). */
export function withProvenance(result: ActionResultInput, provenance: MessageInput<'Provenance'>): ActionResultInput {
  const meta = result.execution_metadata ?? {};
  const aux = (meta.auxiliary_metadata ?? []).filter((a) => typeUrlOf(a) !== PROVENANCE_URL);
  return { ...result, execution_metadata: { ...meta, auxiliary_metadata: [...aux, packAny('Provenance', { ...provenance, written_at_ms: Date.now() })] } };
}

/** The recorded provenance; entries from before provenance was kept count as unverified worker writes. */
export function provenanceOf(result: ActionResultInput | MessageOutput<'ActionResult'>): Provenance {
  for (const a of result.execution_metadata?.auxiliary_metadata ?? []) {
    const value = typeUrlOf(a) === PROVENANCE_URL ? valueOf(a) : undefined;
    if (value) return decode('Provenance', value);
  }
  return { source: 'unknown', worker: '', verified: false, written_at_ms: 0, tool_invocation_id: '' };
}

/**
 * An entry that stands for "removed": the REAPI has no call to delete an ActionCache entry, so a
 * contradicted entry on a remote storage node is overwritten with this, and readers treat it as a
 * miss.
 */
export function removedEntry(): ActionResultInput {
  return withProvenance({}, { source: 'removed' });
}

export function isRemoved(result: ActionResultInput | MessageOutput<'ActionResult'>): boolean {
  return provenanceOf(result).source === 'removed';
}
