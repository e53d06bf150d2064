// Fetching and checking what an Execute request names: the Action and its Command. The scheduler
// loads them once and hands them to the worker with the job (JobSpec.loaded).
import { millisOf } from '../common/proto-time.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import { readBlob } from '../cas/blob-io.ts';
import { digestKey, validateDigest, type Digest } from '../common/digest.ts';
import { invalidArgument, missingBlobs } from '../common/errors.ts';
import { decode, type MessageName, type MessageOutput } from '../protos/index.ts';
import type { JobSpec, PlatformProperties, PreloadedAction } from './job-queue.ts';

export type Action = MessageOutput<'Action'>;
export type Command = MessageOutput<'Command'>;

export interface LoadedAction {
  action: Action;
  command: Command;
  platform: PlatformProperties;
  timeoutMs: number;
}

type Limits = { defaultTimeoutSeconds: number; maxTimeoutSeconds: number };

function decodeMessage<K extends MessageName>(type: K, bytes: Buffer, digest: Digest): MessageOutput<K> {
  try {
    return decode(type, bytes);
  } catch (err) {
    throw invalidArgument(`blob ${digestKey(digest)} is not a valid ${type} message: ${(err as Error).message}`);
  }
}

/** Actions larger than this (Action and Command together) are fetched by the worker instead: job state stays small. */
const MAX_PRELOADED_BYTES = 64 * 1024;

/** The loaded action as a job carries it (`loaded` to spread into a JobSpec; nothing when too large). */
export function preloaded(loaded: LoadedAction & { bytes: { action: Buffer; command: Buffer } }): { loaded?: PreloadedAction } {
  const { action, command } = loaded.bytes;
  if (action.length + command.length > MAX_PRELOADED_BYTES) return {};
  return { loaded: { action: action.toString('base64'), command: command.toString('base64'), timeoutMs: loaded.timeoutMs } };
}

/**
 * A job's action: as the job carries it when its bytes match their digests, else fetched (a job
 * from an older scheduler, an audit, or bytes that do not match).
 */
export async function loadJobAction(blobs: BlobStore, job: JobSpec, limits: Limits): Promise<LoadedAction> {
  const p = job.loaded;
  if (p) {
    const actionBytes = Buffer.from(p.action, 'base64');
    const fn = blobs.digestFunction;
    if (digestKey(fn.digestOf(actionBytes)) === digestKey(job.actionDigest)) {
      const action = decodeMessage('Action', actionBytes, job.actionDigest);
      const commandDigest = validateDigest(action.command_digest, 'Action.command_digest', fn);
      const commandBytes = Buffer.from(p.command, 'base64');
      if (digestKey(fn.digestOf(commandBytes)) === digestKey(commandDigest)) {
        const command = decodeMessage('Command', commandBytes, commandDigest);
        return { action, command, platform: platformOf(action, command), timeoutMs: p.timeoutMs };
      }
    }
  }
  return loadAction(blobs, job.actionDigest, limits);
}

export async function loadAction(blobs: BlobStore, actionDigest: Digest, limits: Limits): Promise<LoadedAction & { bytes: { action: Buffer; command: Buffer } }> {
  if ((await blobs.findMissing([actionDigest])).length > 0) throw missingBlobs([actionDigest], 'Action');
  const actionBytes = await readBlob(blobs, actionDigest);
  const action = decodeMessage('Action', actionBytes, actionDigest);
  const commandDigest = validateDigest(action.command_digest, 'Action.command_digest', blobs.digestFunction);
  const inputRoot = validateDigest(action.input_root_digest, 'Action.input_root_digest', blobs.digestFunction);
  const missing = await blobs.findMissing([commandDigest, inputRoot]);
  if (missing.length > 0) throw missingBlobs(missing, 'Action inputs');
  const commandBytes = await readBlob(blobs, commandDigest);
  const command = decodeMessage('Command', commandBytes, commandDigest);
  if (command.arguments.length === 0) throw invalidArgument(`Command ${digestKey(commandDigest)} has no arguments`);

  let timeoutMs = limits.defaultTimeoutSeconds * 1000;
  if (action.timeout) {
    const asked = millisOf(action.timeout)!;
    if (asked < 0) throw invalidArgument(`Action.timeout ${asked} ms is negative`);
    if (asked > limits.maxTimeoutSeconds * 1000) {
      throw invalidArgument(`Action.timeout of ${asked / 1000} s exceeds this server's maximum of ${limits.maxTimeoutSeconds} s`);
    }
    if (asked > 0) timeoutMs = asked;
  }
  return { action, command, platform: platformOf(action, command), timeoutMs, bytes: { action: actionBytes, command: commandBytes } };
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
