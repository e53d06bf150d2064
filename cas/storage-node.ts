// A running storage node: the CAS, ByteStream, ActionCache and Capabilities services on gRPC, and
// /metrics and /healthz on HTTP. `reapi cas` runs one; `reapi serve` runs one in its process.
import type { Server as HttpServer } from 'node:http';
import type * as grpc from '@grpc/grpc-js';
import type { Config } from '../common/config.ts';
import { startGrpcServer, stopGrpcServer } from '../common/grpc-server.ts';
import { startHttpServer } from '../common/http-server.ts';
import type { Logger } from '../common/logger.ts';
import { Metrics } from '../common/metrics.ts';
import { serviceDefinitions } from '../protos/index.ts';
import { actionCacheService } from './services/action-cache-service.ts';
import { byteStreamService } from './services/bytestream-service.ts';
import { capabilitiesService } from './services/capabilities-service.ts';
import { casService } from './services/cas-service.ts';
import type { StorageContext } from './services/storage-context.ts';
import { createStorage, type Storage } from './storage-factory.ts';

export interface StorageNode {
  grpcPort: number;
  httpPort: number;
  storage: Storage;
  metrics: Metrics;
  close(): Promise<void>;
}

export async function startStorageNode(config: Config, logger: Logger, metrics = new Metrics()): Promise<StorageNode> {
  const storage = await createStorage(config, metrics, logger);
  const context: StorageContext = {
    ...storage,
    config,
    service: (name) => ({ service: name, metrics, logger: logger.child({ service: name }) }),
  };
  const byteStream = byteStreamService(context);
  const { server, port } = await startGrpcServer({
    host: config.listen,
    port: config.port,
    maxMessageBytes: config.maxMessageBytes,
    services: [
      [serviceDefinitions.Capabilities, capabilitiesService(context.service('Capabilities'), () => ({
        maxBatchTotalSizeBytes: config.storage.maxBatchTotalSizeBytes,
        actionCacheUpdateEnabled: config.actionCache.clientWrites === 'allow',
        execEnabled: false,
      }))],
      [serviceDefinitions.ContentAddressableStorage, casService(context)],
      [serviceDefinitions.ByteStream, byteStream],
      [serviceDefinitions.ActionCache, actionCacheService(context)],
    ] as Array<[grpc.ServiceDefinition, grpc.UntypedServiceImplementation]>,
  });
  let http: HttpServer;
  let httpPort: number;
  try {
    ({ server: http, port: httpPort } = await startHttpServer({ host: config.listen, port: config.httpPort, metrics, logger }));
  } catch (err) {
    await stopGrpcServer(server, 0);
    throw err;
  }
  logger.info({ grpcPort: port, httpPort, dataDir: config.dataDir, backend: config.storage.backend }, 'storage node listening');
  return {
    grpcPort: port,
    httpPort,
    storage,
    metrics,
    close: async () => {
      byteStream.close();
      await Promise.all([stopGrpcServer(server), new Promise<void>((r) => http.close(() => r()))]);
    },
  };
}
