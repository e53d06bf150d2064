// Original file: protos/build/bazel/remote/asset/v1/remote_asset.proto


export interface PushDirectoryResponse {
}

export interface PushDirectoryResponse__Output {
}
