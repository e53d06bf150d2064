// The Prometheus metrics of one process, on one registry. Names are stable (see the README);
// labels stay low-cardinality: never digests or targets.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Where gauges read at scrape time come from; set by the roles that have them. */
export interface MetricSources {
  /** Jobs per platform and live workers (scheduler, `reapi serve`). */
  queue?: () => Promise<{
    platforms: Array<{ platform: Record<string, string>; waiting: number; active: number }>;
    workers: Array<{ platform: Record<string, string>; concurrency: number }>;
  }>;
  /** Cumulative counters of the worker's local content cache. */
  inputCache?: () => { hitBytes: number; missBytes: number; hitBlobs: number; missBlobs: number };
}

/** A platform as a label value: its sorted name=value pairs (bound it with Metrics.labels.platform). */
export function platformLabel(platform: Record<string, string>): string {
  return Object.keys(platform)
    .sort()
    .map((k) => `${k}=${platform[k]}`)
    .join(',') || '(none)';
}

/** The value every label value outside a BoundedLabel's set is folded into. */
export const OTHER_LABEL = '(other)';

/**
 * Label values that come from clients (instance names, mnemonics, platforms) drawn from a bounded
 * set, so that invented values cannot grow the number of series without end: the configured
 * values when there are some, else the first `max` distinct values seen; everything else is
 * OTHER_LABEL.
 */
export class BoundedLabel {
  private readonly known: Set<string>;
  private readonly open: boolean;

  constructor(configured: readonly string[] | undefined, private readonly max: number) {
    this.open = configured === undefined || configured.length === 0;
    this.known = new Set(configured ?? []);
  }

  of(value: string): string {
    if (this.known.has(value)) return value;
    if (this.open && this.known.size < this.max) {
      this.known.add(value);
      return value;
    }
    return OTHER_LABEL;
  }
}

export interface MetricsOptions {
  defaultMetrics?: boolean;
  /** Instance names kept as label values (others are OTHER_LABEL); unset: the first 16 seen. */
  instanceNames?: readonly string[];
}

export class Metrics {
  readonly registry = new Registry();
  readonly sources: MetricSources = {};
  private inputCacheSeen = { hitBytes: 0, missBytes: 0, hitBlobs: 0, missBlobs: 0 };

  readonly actionCacheRequests = new Counter({
    name: 'reapi_action_cache_requests_total',
    help: 'ActionCache lookups (GetActionResult and scheduler lookups), by result; CAS hits are never counted here.',
    labelNames: ['instance', 'result'] as const,
    registers: [this.registry],
  });

  readonly actionCacheUpdates = new Counter({
    name: 'reapi_action_cache_updates_total',
    help: 'ActionCache writes, by who wrote (client or worker) and whether they were accepted.',
    labelNames: ['instance', 'source', 'result'] as const,
    registers: [this.registry],
  });

  readonly grpcRequests = new Counter({
    name: 'reapi_grpc_requests_total',
    help: 'gRPC calls handled, by service, method and status code.',
    labelNames: ['service', 'method', 'code'] as const,
    registers: [this.registry],
  });

  readonly grpcDuration = new Histogram({
    name: 'reapi_grpc_request_duration_seconds',
    help: 'Time to handle a gRPC call, by service and method.',
    labelNames: ['service', 'method'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });

  readonly casBytes = new Counter({
    name: 'reapi_cas_bytes_total',
    help: 'Uncompressed blob bytes moved through the CAS, by direction (read or write).',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });

  readonly casBlobOps = new Counter({
    name: 'reapi_cas_blob_operations_total',
    help: 'Blob reads and writes, by direction and result (ok, missing, rejected, exists).',
    labelNames: ['direction', 'result'] as const,
    registers: [this.registry],
  });

  readonly casStoredBytes = new Gauge({
    name: 'reapi_cas_stored_bytes',
    help: 'Bytes of blobs held by this storage node.',
    registers: [this.registry],
  });

  readonly casStoredBlobs = new Gauge({
    name: 'reapi_cas_stored_blobs',
    help: 'Number of blobs held by this storage node.',
    registers: [this.registry],
  });

  readonly casCapacityBytes = new Gauge({
    name: 'reapi_cas_capacity_bytes',
    help: 'Configured size cap of the CAS (--max-cas-bytes).',
    registers: [this.registry],
  });

  readonly casEvictions = new Counter({
    name: 'reapi_cas_evictions_total',
    help: 'Blobs evicted to stay under the size cap.',
    registers: [this.registry],
  });

  readonly casEvictedBytes = new Counter({
    name: 'reapi_cas_evicted_bytes_total',
    help: 'Bytes evicted to stay under the size cap.',
    registers: [this.registry],
  });

  readonly assetFetches = new Counter({
    name: 'reapi_asset_fetches_total',
    help: 'Remote Asset fetches by kind (blob, directory) and result (cached, fetched, failed).',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  });

  readonly casWritesRefused = new Counter({
    name: 'reapi_cas_writes_refused_total',
    help: 'Writes refused because the CAS is over its cap with only leased or pinned blobs left (raise the cap or shorten the lease).',
    registers: [this.registry],
  });

  readonly casCorruptBlobs = new Counter({
    name: 'reapi_cas_corrupt_blobs_total',
    help: 'Stored blobs found with the wrong size or hash on read; they are removed, never served.',
    registers: [this.registry],
  });

  readonly findMissingDigests = new Counter({
    name: 'reapi_cas_find_missing_digests_total',
    help: 'Digests asked about in FindMissingBlobs, by result (present or missing).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  /** Per node of the storage chains (cas/metrics-blob-store.ts): `backend` names the node. */
  readonly blobStoreOperations = new Counter({
    name: 'reapi_blob_store_operations_total',
    help: 'Operations on each node of the CAS chain (find_missing, read, write), by result (ok, missing, exists, error).',
    labelNames: ['backend', 'operation', 'result'] as const,
    registers: [this.registry],
  });

  readonly blobStoreBytes = new Counter({
    name: 'reapi_blob_store_bytes_total',
    help: 'Blob bytes asked of (read) and committed to (write) each node of the CAS chain.',
    labelNames: ['backend', 'direction'] as const,
    registers: [this.registry],
  });

  readonly blobStoreDuration = new Histogram({
    name: 'reapi_blob_store_operation_duration_seconds',
    help: 'Time of find_missing, of opening a read and of committing a write, per node of the CAS chain.',
    labelNames: ['backend', 'operation'] as const,
    buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  readonly actionCacheBackendOperations = new Counter({
    name: 'reapi_action_cache_backend_operations_total',
    help: 'Operations on each node of the ActionCache chain (get, put, remove), by result (hit, miss, ok, refused, error).',
    labelNames: ['backend', 'operation', 'result'] as const,
    registers: [this.registry],
  });

  readonly actionsExecuted = new Counter({
    name: 'reapi_actions_executed_total',
    help: 'Actions run by workers, by outcome: success, nonzero-exit, timeout, memory-limit, process-limit, file-size-limit, cancelled, error.',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly executionStageDuration = new Histogram({
    name: 'reapi_execution_stage_duration_seconds',
    help: 'Time spent per execution stage on workers (queued, input_fetch, execution, output_upload), from ExecutedActionMetadata.',
    labelNames: ['stage'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
    registers: [this.registry],
  });

  readonly nondeterministicActions = new Counter({
    name: 'reapi_nondeterministic_actions_total',
    help: 'Actions whose two runs (verification) disagreed; their results were not cached.',
    labelNames: ['mnemonic'] as const,
    registers: [this.registry],
  });

  readonly cachePoisoningSuspected = new Counter({
    name: 'reapi_cache_poisoning_suspected_total',
    help: 'Served cache entries contradicted by a later execution (audit) or client-written entries a worker contradicted; the entry was removed.',
    labelNames: ['mnemonic'] as const,
    registers: [this.registry],
  });

  readonly verifications = new Counter({
    name: 'reapi_verifications_total',
    help: 'Double executions, by result: agreed, differed, or skipped (the first run failed).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly audits = new Counter({
    name: 'reapi_audits_total',
    help: 'Background re-executions of served cache entries, by result: confirmed, contradicted, failed.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly queueDepth = new Gauge({
    name: 'reapi_queue_depth',
    help: 'Jobs per platform queue, by state (waiting or active).',
    labelNames: ['platform', 'state'] as const,
    registers: [this.registry],
    collect: async () => {
      const stats = await this.queueSnapshot();
      if (!stats) return;
      this.queueDepth.reset();
      for (const p of stats.platforms) {
        this.queueDepth.set({ platform: this.platform(p.platform), state: 'waiting' }, p.waiting);
        this.queueDepth.set({ platform: this.platform(p.platform), state: 'active' }, p.active);
      }
    },
  });

  readonly workersConnected = new Gauge({
    name: 'reapi_workers_connected',
    help: 'Live workers, by the platform they offer (read with reapi_queue_depth).',
    labelNames: ['platform'] as const,
    registers: [this.registry],
    collect: async () => {
      const stats = await this.queueSnapshot();
      if (!stats) return;
      this.workersConnected.reset();
      for (const w of stats.workers) this.workersConnected.inc({ platform: this.platform(w.platform) });
    },
  });

  readonly queueWait = new Histogram({
    name: 'reapi_queue_wait_seconds',
    help: 'Time from Execute to a worker starting the action, by platform.',
    labelNames: ['platform'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });

  readonly inputCacheBytes = new Counter({
    name: 'reapi_worker_input_cache_bytes_total',
    help: "Input bytes found in the worker's local content cache (hit) or fetched from the CAS (miss).",
    labelNames: ['result'] as const,
    registers: [this.registry],
    collect: () => this.collectInputCache(),
  });

  readonly inputCacheBlobs = new Counter({
    name: 'reapi_worker_input_cache_blobs_total',
    help: "Input blobs found in the worker's local content cache (hit) or fetched from the CAS (miss).",
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  /** Bounded sets for the label values clients choose. */
  readonly labels: { instance: BoundedLabel; mnemonic: BoundedLabel; platform: BoundedLabel };

  constructor(opts: MetricsOptions = {}) {
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    this.labels = {
      instance: new BoundedLabel(opts.instanceNames, 16),
      mnemonic: new BoundedLabel(undefined, 200),
      platform: new BoundedLabel(undefined, 64),
    };
  }

  /** A platform as a label value from the bounded set. */
  platform(platform: Record<string, string>): string {
    return this.labels.platform.of(platformLabel(platform));
  }

  private snapshot?: { at: number; value: ReturnType<NonNullable<MetricSources['queue']>> };

  /** One queue snapshot per scrape, shared by the gauges that read it. */
  private queueSnapshot() {
    const source = this.sources.queue;
    if (!source) return Promise.resolve(undefined);
    if (!this.snapshot || Date.now() - this.snapshot.at > 500) this.snapshot = { at: Date.now(), value: source() };
    return this.snapshot.value.catch(() => undefined);
  }

  private collectInputCache(): void {
    const now = this.sources.inputCache?.();
    if (!now) return;
    const seen = this.inputCacheSeen;
    this.inputCacheBytes.inc({ result: 'hit' }, now.hitBytes - seen.hitBytes);
    this.inputCacheBytes.inc({ result: 'miss' }, now.missBytes - seen.missBytes);
    this.inputCacheBlobs.inc({ result: 'hit' }, now.hitBlobs - seen.hitBlobs);
    this.inputCacheBlobs.inc({ result: 'miss' }, now.missBlobs - seen.missBlobs);
    this.inputCacheSeen = { hitBytes: now.hitBytes, missBytes: now.missBytes, hitBlobs: now.hitBlobs, missBlobs: now.missBlobs };
  }
}
