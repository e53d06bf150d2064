// Original file: protos/build/bazel/remote/asset/v1/remote_asset.proto


export interface PushBlobResponse {
}

export interface PushBlobResponse__Output {
}
