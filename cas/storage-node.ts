// The storage services (CAS, ByteStream, ActionCache, Capabilities) over any BlobStore and
// ActionCache: local ones on a storage node, remote ones on a scheduler that forwards.
import type * as grpc from '@grpc/grpc-js';
import type { Config } from '../common/config.ts';
import type { ServiceContext } from '../common/grpc.ts';
import type { Logger } from '../common/logger.ts';
import { Metrics } from '../common/metrics.ts';
import { startServer } from '../common/server.ts';
import { createGuard, type CallGuard } from '../common/auth/index.ts';
import { serviceDefinitions } from '../protos/index.ts';
import type { StorageContext } from './services/storage-context.ts';
import { actionCacheService } from './services/action-cache-service.ts';
import { assetServices } from './asset/asset-services.ts';
import { byteStreamService } from './services/bytestream-service.ts';
import { capabilitiesService } from './services/capabilities-service.ts';
import { casService } from './services/cas-service.ts';
import { createStorage, type Storage } from './storage-factory.ts';

export type ServiceList = Array<[grpc.ServiceDefinition, grpc.UntypedServiceImplementation]>;

export interface StorageServicesOptions extends StorageContext {
  /** Whether Capabilities announces execution (a scheduler or `reapi serve` with workers). */
  execEnabled: boolean;
  /** Serve the Remote Asset API (front doors: `reapi serve`, schedulers; not storage nodes). */
  assets?: boolean;
}

export function storageServices(opts: StorageServicesOptions): { services: ServiceList; close(): void } {
  const { config } = opts;
  const byteStream = byteStreamService(opts);
  const capabilities = capabilitiesService(opts.service('Capabilities'), (instanceName) => ({
    maxBatchTotalSizeBytes: config.storage.maxBatchTotalSizeBytes,
    actionCacheUpdateEnabled: opts.clientWrites !== 'deny',
    execEnabled: opts.execEnabled,
    digestFunctions: opts.stores.functions,
    defaultDigestFunction: opts.stores.resolve(instanceName).digestFunction,
  }));
  const services: ServiceList = [
    [serviceDefinitions.Capabilities, capabilities],
    [serviceDefinitions.ContentAddressableStorage, casService(opts)],
    [serviceDefinitions.ByteStream, byteStream],
    [serviceDefinitions.ActionCache, actionCacheService(opts)],
  ] as ServiceList;
  if (opts.assets && config.assets.enabled) {
    const { fetch, push } = assetServices(opts);
    services.push([serviceDefinitions.Fetch, fetch], [serviceDefinitions.Push, push] as ServiceList[number]);
  }
  return {
    services,
    close: () => byteStream.close(),
  };
}

export interface StorageNode {
  grpcPort: number;
  httpPort: number;
  storage: Storage;
  metrics: Metrics;
  close(): Promise<void>;
}

/** `reapi cas`: a storage node on local storage. */
export async function startStorageNode(config: Config, logger: Logger, metrics = new Metrics({ instanceNames: config.metrics.instanceNames })): Promise<StorageNode> {
  // Workers and schedulers write through storage nodes, presenting the fleet token; anyone else
  // is a client, whose writes are refused unless configured otherwise.
  const denyHint =
    config.fleetToken === undefined
      ? '; this storage node has no fleet token, so no worker can write either: give storage nodes, schedulers and workers the same --fleet-token-file (or $REAPI_FLEET_TOKEN)'
      : '; workers and schedulers write by presenting the fleet token';
  const guard = createGuard(config);
  const storage = await createStorage('cas', { config, metrics, logger, denyHint });
  const { services, close } = storageServices({
    stores: storage,
    clientWrites: storage.clientWrites,
    config,
    service: serviceContexts(metrics, logger, guard),
    execEnabled: false,
  });
  if (config.fleetToken === undefined) {
    logger.warn('no fleet token (--fleet-token-file or $REAPI_FLEET_TOKEN): this storage node accepts no ActionCache writes from workers; give storage nodes, schedulers and workers the same token');
  }
  const server = await startServer({ config, logger, metrics, services, guard });
  logger.info({ grpcPort: server.grpcPort, httpPort: server.httpPort, dataDir: config.dataDir, backend: config.storage.backend }, 'storage node listening');
  return {
    grpcPort: server.grpcPort,
    httpPort: server.httpPort,
    storage,
    metrics,
    close: async () => {
      close();
      await server.close();
      storage.close();
    },
  };
}

export function serviceContexts(metrics: Metrics, logger: Logger, guard: CallGuard): (name: string) => ServiceContext {
  return (name) => ({ service: name, metrics, logger: logger.child({ service: name }), guard });
}
