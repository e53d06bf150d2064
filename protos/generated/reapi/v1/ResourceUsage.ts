// Original file: protos/reapi/v1/reapi.proto

import type { Long } from '@grpc/proto-loader';

export interface ResourceUsage {
  'user_cpu_ms'?: (number | string | Long);
  'system_cpu_ms'?: (number | string | Long);
  'max_rss_bytes'?: (number | string | Long);
  'runner'?: (string);
  'input_fetched_bytes'?: (number | string | Long);
  'input_cached_bytes'?: (number | string | Long);
  'input_files'?: (number | string | Long);
}

export interface ResourceUsage__Output {
  'user_cpu_ms': (number);
  'system_cpu_ms': (number);
  'max_rss_bytes': (number);
  'runner': (string);
  'input_fetched_bytes': (number);
  'input_cached_bytes': (number);
  'input_files': (number);
}
