// The client side of one wasm proc-macro expansion through the fleet (`reapi expand`).
// The Action is built deterministically from the module, the entry and the input tokens (no
// salt, fixed timeout), so the same expansion always has the same action digest: the second time
// it is an ActionCache hit. The cache is asked first (a hit needs no upload at all); on a miss the
// module and inputs are uploaded (FindMissingBlobs first) and the action executed.
import { DEFAULT_EXPAND_TIMEOUT_SECONDS } from './expand-defaults.ts';
import { status as grpcStatus } from '@grpc/grpc-js';
import type { Digest } from '../common/digest.ts';
import { WASM_MACRO_PLATFORM, WASM_MACRO_PROGRAM } from '../execution/wasm-macro.ts';
import {
  execute,
  FileEntry,
  lookupActionResult,
  outputFile,
  prepareAction,
  readBlob,
  uploadMissing,
  type ActionResult,
  type ExecClients,
  type PreparedAction,
  type TreeSpec,
} from './remote-execution.ts';

/** Names inside the action's input root; part of the action key, so never change them lightly. */
export const EXPAND_FILES = { module: 'macro.wasm', input: 'input.rs', attr: 'attr.rs', output: 'expansion.rs' } as const;

export { DEFAULT_EXPAND_TIMEOUT_SECONDS };

export interface ExpandRequest {
  module: Buffer;
  entry: string;
  /** The macro's input tokens (the item, for an attribute macro). */
  input: Buffer;
  /** The attribute's tokens: makes this an attribute-macro expansion. */
  attr?: Buffer;
  timeoutSeconds?: number;
  /** Extra platform properties (e.g. ISA, which pins NaN bit patterns); runtime=wasm-macro is always set. */
  platform?: Record<string, string>;
  /** The module's SHA-256 digest when the caller keeps it (spares hashing the module each time). */
  moduleDigest?: Digest;
}

export interface ExpandResult {
  output: Buffer;
  /** Served from the ActionCache. */
  cached: boolean;
  actionDigest: Digest;
}

/** An expansion that did not produce output: the macro panicked, was rejected, timed out, ... */
export class ExpandError extends Error {
  override readonly name = 'ExpandError';
  constructor(
    message: string,
    /** The action's exit code when it ran (101: the macro panicked). */
    readonly exitCode?: number,
    /** The gRPC status code when the server answered with one. */
    readonly code?: number,
  ) {
    super(message);
  }
}

/** The Action, Command and input tree of an expansion; nothing uploaded. Deterministic. */
export function prepareExpansion(req: ExpandRequest): PreparedAction {
  const inputs: TreeSpec = { [EXPAND_FILES.module]: new FileEntry(req.module, false, req.moduleDigest), [EXPAND_FILES.input]: req.input };
  const argv = [WASM_MACRO_PROGRAM, '--module', EXPAND_FILES.module, '--entry', req.entry, '--input', EXPAND_FILES.input];
  if (req.attr !== undefined) {
    inputs[EXPAND_FILES.attr] = req.attr;
    argv.push('--attr', EXPAND_FILES.attr);
  }
  argv.push('--output', EXPAND_FILES.output);
  return prepareAction({
    argv,
    inputs,
    outputFiles: [EXPAND_FILES.output],
    platform: { ...req.platform, ...WASM_MACRO_PLATFORM },
    timeoutSeconds: req.timeoutSeconds ?? DEFAULT_EXPAND_TIMEOUT_SECONDS,
    salt: '',
  });
}

async function outputOf(c: ExecClients, result: ActionResult): Promise<Buffer | undefined> {
  return (await outputFile(c, result, EXPAND_FILES.output))?.data;
}

/** Expand through the fleet: ActionCache first, Execute on a miss. Throws ExpandError. */
export async function expand(c: ExecClients, req: ExpandRequest): Promise<ExpandResult> {
  const prepared = prepareExpansion(req);
  const { actionDigest } = prepared;
  // The expansion comes inline with the entry: a hit is one round trip.
  const hit = await lookupActionResult(c, actionDigest, { inlineOutputFiles: [EXPAND_FILES.output] });
  if (hit && hit.exit_code === 0) {
    const output = await outputOf(c, hit);
    if (output !== undefined) return { output, cached: true, actionDigest };
  }

  await uploadMissing(c, prepared.blobs);
  const timeoutMs = (req.timeoutSeconds ?? DEFAULT_EXPAND_TIMEOUT_SECONDS) * 1000;
  let outcome;
  try {
    outcome = await execute(c, actionDigest, { skipCacheLookup: hit !== undefined, deadlineMs: timeoutMs + 60_000 });
  } catch (err) {
    const e = err as { code?: number; details?: string; message: string };
    if (typeof e.code === 'number') throw new ExpandError(`${grpcStatus[e.code] ?? e.code}: ${e.details ?? e.message}`, undefined, e.code);
    throw err;
  }
  const { response } = outcome;
  const result = response.result;
  const st = response.status;
  const stderr = result ? (await readBlob(c, result.stderr_digest)).toString('utf8').trim() : '';
  if (st && st.code !== 0) {
    throw new ExpandError(`${grpcStatus[st.code] ?? st.code}: ${st.message}${stderr && !st.message.includes(stderr) ? `\n${stderr}` : ''}`, result?.exit_code, st.code);
  }
  if (!result) throw new ExpandError('the server answered without a result');
  if (result.exit_code !== 0) {
    throw new ExpandError(stderr || `the expansion exited with code ${result.exit_code}${response.message ? `: ${response.message}` : ''}`, result.exit_code);
  }
  const output = await outputOf(c, result);
  if (output === undefined) throw new ExpandError(`the expansion succeeded but produced no ${EXPAND_FILES.output}${response.message ? ` (${response.message})` : ''}`);
  return { output, cached: response.cached_result === true, actionDigest };
}
