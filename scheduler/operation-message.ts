// OperationState (what the queue keeps) -> google.longrunning.Operation (what clients see).
import { packAny, typeUrl, type MessageInput } from '../protos/index.ts';
import type { OperationState, Stage } from '../execution/job-queue.ts';
import type { Digest } from '../common/digest.ts';
import type { DigestFunctionName } from '../common/digest-function.ts';

export type Operation = MessageInput<'Operation'>;

export function executeMetadata(stage: Stage | 'CACHE_CHECK', actionDigest: Digest, digestFunction: DigestFunctionName = 'SHA256') {
  return packAny('ExecuteOperationMetadata', { stage, action_digest: actionDigest, digest_function: digestFunction });
}

export function operationMessage(state: OperationState): Operation {
  const metadata = executeMetadata(state.done ? 'COMPLETED' : state.stage, state.job.actionDigest, state.job.digestFunction);
  if (!state.done) return { name: state.name, metadata, done: false };
  if (state.response) {
    return { name: state.name, metadata, done: true, response: { type_url: typeUrl('ExecuteResponse'), value: state.response } };
  }
  // The job never produced a response (cancelled, workers kept dying): say why in the
  // ExecuteResponse status, where Bazel and Buck2 look for execution errors.
  const status = state.error ?? { code: 13, message: 'operation finished without a result' };
  return { name: state.name, metadata, done: true, response: packAny('ExecuteResponse', { status }) };
}

/** A finished operation for a cache hit, answered without queueing. */
export function cachedOperation(name: string, actionDigest: Digest, result: MessageInput<'ActionResult'>, digestFunction?: DigestFunctionName): Operation {
  return {
    name,
    metadata: executeMetadata('COMPLETED', actionDigest, digestFunction),
    done: true,
    response: packAny('ExecuteResponse', { result, cached_result: true, status: { code: 0, message: '' } }),
  };
}
