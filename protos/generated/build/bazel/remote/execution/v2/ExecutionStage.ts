// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto


// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

export const _build_bazel_remote_execution_v2_ExecutionStage_Value = {
  UNKNOWN: 'UNKNOWN',
  CACHE_CHECK: 'CACHE_CHECK',
  QUEUED: 'QUEUED',
  EXECUTING: 'EXECUTING',
  COMPLETED: 'COMPLETED',
} as const;

export type _build_bazel_remote_execution_v2_ExecutionStage_Value =
  | 'UNKNOWN'
  | 0
  | 'CACHE_CHECK'
  | 1
  | 'QUEUED'
  | 2
  | 'EXECUTING'
  | 3
  | 'COMPLETED'
  | 4

export type _build_bazel_remote_execution_v2_ExecutionStage_Value__Output = typeof _build_bazel_remote_execution_v2_ExecutionStage_Value[keyof typeof _build_bazel_remote_execution_v2_ExecutionStage_Value]

export interface ExecutionStage {
}

export interface ExecutionStage__Output {
}
