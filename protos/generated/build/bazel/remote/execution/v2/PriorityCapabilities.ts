// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto


export interface _build_bazel_remote_execution_v2_PriorityCapabilities_PriorityRange {
  'min_priority'?: (number);
  'max_priority'?: (number);
}

export interface _build_bazel_remote_execution_v2_PriorityCapabilities_PriorityRange__Output {
  'min_priority': (number);
  'max_priority': (number);
}

export interface PriorityCapabilities {
  'priorities'?: (_build_bazel_remote_execution_v2_PriorityCapabilities_PriorityRange)[];
}

export interface PriorityCapabilities__Output {
  'priorities': (_build_bazel_remote_execution_v2_PriorityCapabilities_PriorityRange__Output)[];
}
