// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto


// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

export const _build_bazel_remote_execution_v2_ChunkingFunction_Value = {
  UNKNOWN: 'UNKNOWN',
  FAST_CDC_2020: 'FAST_CDC_2020',
  REP_MAX_CDC: 'REP_MAX_CDC',
} as const;

export type _build_bazel_remote_execution_v2_ChunkingFunction_Value =
  | 'UNKNOWN'
  | 0
  | 'FAST_CDC_2020'
  | 1
  | 'REP_MAX_CDC'
  | 2

export type _build_bazel_remote_execution_v2_ChunkingFunction_Value__Output = typeof _build_bazel_remote_execution_v2_ChunkingFunction_Value[keyof typeof _build_bazel_remote_execution_v2_ChunkingFunction_Value]

export interface ChunkingFunction {
}

export interface ChunkingFunction__Output {
}
