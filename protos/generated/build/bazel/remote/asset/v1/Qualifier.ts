// Original file: protos/build/bazel/remote/asset/v1/remote_asset.proto


export interface Qualifier {
  'name'?: (string);
  'value'?: (string);
}

export interface Qualifier__Output {
  'name': (string);
  'value': (string);
}
