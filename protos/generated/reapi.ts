import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { Provenance as _reapi_v1_Provenance, Provenance__Output as _reapi_v1_Provenance__Output } from './reapi/v1/Provenance';
import type { ResourceUsage as _reapi_v1_ResourceUsage, ResourceUsage__Output as _reapi_v1_ResourceUsage__Output } from './reapi/v1/ResourceUsage';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  reapi: {
    v1: {
      Provenance: MessageTypeDefinition<_reapi_v1_Provenance, _reapi_v1_Provenance__Output>
      ResourceUsage: MessageTypeDefinition<_reapi_v1_ResourceUsage, _reapi_v1_ResourceUsage__Output>
    }
  }
}

