// Fetching and checking what an Execute request names: the Action and its Command.
import type { BlobStore } from '../cas/blob-store.ts';
import { readBlob } from '../cas/blob-io.ts';
import { digestKey, validateDigest, type Digest } from '../common/digest.ts';
import { invalidArgument, missingBlobs } from '../common/errors.ts';
import { decode, type MessageName, type MessageOutput } from '../protos/index.ts';
import type { PlatformProperties } from './job-queue.ts';

export type Action = MessageOutput<'Action'>;
export type Command = MessageOutput<'Command'>;

export interface LoadedAction {
  action: Action;
  command: Command;
  platform: PlatformProperties;
  timeoutMs: number;
}

async function fetchMessage<K extends MessageName>(blobs: BlobStore, type: K, digest: Digest): Promise<MessageOutput<K>> {
  const bytes = await readBlob(blobs, digest);
  try {
    return decode(type, bytes);
  } catch (err) {
    throw invalidArgument(`blob ${digestKey(digest)} is not a valid ${type} message: ${(err as Error).message}`);
  }
}

export async function loadAction(
  blobs: BlobStore,
  actionDigest: Digest,
  limits: { defaultTimeoutSeconds: number; maxTimeoutSeconds: number },
): Promise<LoadedAction> {
  if ((await blobs.findMissing([actionDigest])).length > 0) throw missingBlobs([actionDigest], 'Action');
  const action = await fetchMessage(blobs, 'Action', actionDigest);
  const commandDigest = validateDigest(action.command_digest, 'Action.command_digest');
  const inputRoot = validateDigest(action.input_root_digest, 'Action.input_root_digest');
  const missing = await blobs.findMissing([commandDigest, inputRoot]);
  if (missing.length > 0) throw missingBlobs(missing, 'Action inputs');
  const command = await fetchMessage(blobs, 'Command', commandDigest);
  if (command.arguments.length === 0) throw invalidArgument(`Command ${digestKey(commandDigest)} has no arguments`);

  let timeoutMs = limits.defaultTimeoutSeconds * 1000;
  if (action.timeout) {
    const asked = Number(action.timeout.seconds) * 1000 + Math.floor(action.timeout.nanos / 1e6);
    if (asked < 0) throw invalidArgument(`Action.timeout ${asked} ms is negative`);
    if (asked > limits.maxTimeoutSeconds * 1000) {
      throw invalidArgument(`Action.timeout of ${asked / 1000} s exceeds this server's maximum of ${limits.maxTimeoutSeconds} s`);
    }
    if (asked > 0) timeoutMs = asked;
  }
  return { action, command, platform: platformOf(action, command), timeoutMs };
}

/**
 * The platform an action asks for: Action.platform (v2.2+) or else Command.platform. Repeated
 * names are joined with ',' in the order given.
 */
export function platformOf(action: Action, command: Command): PlatformProperties {
  const props = action.platform?.properties.length ? action.platform.properties : (command.platform?.properties ?? []);
  const out: PlatformProperties = {};
  for (const p of props) out[p.name] = p.name in out ? `${out[p.name]},${p.value}` : p.value;
  return out;
}
