// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto


// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

export const _build_bazel_remote_execution_v2_Compressor_Value = {
  IDENTITY: 'IDENTITY',
  ZSTD: 'ZSTD',
  DEFLATE: 'DEFLATE',
  BROTLI: 'BROTLI',
} as const;

export type _build_bazel_remote_execution_v2_Compressor_Value =
  | 'IDENTITY'
  | 0
  | 'ZSTD'
  | 1
  | 'DEFLATE'
  | 2
  | 'BROTLI'
  | 3

export type _build_bazel_remote_execution_v2_Compressor_Value__Output = typeof _build_bazel_remote_execution_v2_Compressor_Value[keyof typeof _build_bazel_remote_execution_v2_Compressor_Value]

export interface Compressor {
}

export interface Compressor__Output {
}
