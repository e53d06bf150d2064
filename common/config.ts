// The typed configuration shared by every role. A config file (JSON) is validated by this schema;
// command-line flags and environment variables override it; defaults work on one machine.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parseSize } from './sizes.ts';
import { DIGEST_FUNCTION_NAMES } from './digest-function-names.ts';
import { actionCacheConfigSchema, blobStoreConfigSchema, sizeBytes } from './storage-config.ts';
import { permissionSchema } from './auth/permissions.ts';

export { parseSize };

export const configSchema = z
  .object({
    /** gRPC port. */
    port: z.number().int().min(0).max(65535).default(8980),
    /** HTTP port for /metrics, /healthz and /api. */
    httpPort: z.number().int().min(0).max(65535).default(8981),
    /** Address to listen on: this machine only unless told otherwise. */
    listen: z.string().default('127.0.0.1'),
    /**
     * The fleet's shared secret (`--fleet-token-file`, $REAPI_FLEET_TOKEN): schedulers and workers
     * present it to storage nodes, which accept ActionCache writes and the writer's provenance only
     * from callers presenting it. Unset on a storage node: every AC write is a client's.
     */
    fleetToken: z.string().min(16, 'the fleet token must have at least 16 characters').optional(),
    /** TLS on every gRPC and HTTP listener of this role; files are re-read when they change. */
    tls: z
      .object({
        /** PEM certificate chain and key of this server. */
        cert: z.string().optional(),
        key: z.string().optional(),
        /** PEM CA bundle: client certificates are required and verified against it (mTLS). */
        clientCa: z.string().optional(),
      })
      .strict()
      .prefault({}),
    /** Who may call this role and what they may do (common/auth/). */
    auth: z
      .object({
        /** Principals (mTLS subject CN/SAN, static-token or JWT subject) and their permissions. */
        principals: z
          .array(
            z
              .object({
                name: z.string().min(1),
                permissions: z.array(permissionSchema),
                /** Instance-name prefixes this principal is limited to. */
                instances: z.array(z.string()).optional(),
              })
              .strict(),
          )
          .default([]),
        /** Static bearer tokens: a file of lines "PRINCIPAL TOKEN". */
        tokensFile: z.string().optional(),
        /** Bearer JWTs, verified against a PEM public key or a JWKS file. */
        jwt: z
          .object({ issuer: z.string(), audience: z.string(), keysFile: z.string(), principalClaim: z.string().default('sub') })
          .strict()
          .optional(),
        /** What callers without credentials may do where credentials are configured (default: nothing). */
        anonymous: z.array(permissionSchema).default([]),
        /** /metrics answers without credentials (default true: Prometheus scrapes it). */
        openMetrics: z.boolean().default(true),
        /** Allow listening beyond loopback without TLS and credentials (`--insecure`). */
        insecure: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    /** How this process calls other reapi servers (storage nodes, the scheduler): TLS and credentials. */
    client: z
      .object({
        /** PEM CA bundle to verify servers with (default: the system roots). */
        ca: z.string().optional(),
        /** PEM client certificate and key (mTLS). */
        cert: z.string().optional(),
        key: z.string().optional(),
        /** A file holding the bearer token to send. */
        tokenFile: z.string().optional(),
      })
      .strict()
      .prefault({}),
    dataDir: z.string().default('.reapi-data'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    storage: z
      .object({
        backend: z.enum(['disk', 'memory']).default('disk'),
        /** Size cap of the CAS; least recently used blobs are evicted past it. */
        maxBytes: sizeBytes.default(10 * 1024 ** 3),
        /**
         * Build without the Bytes: a blob found by FindMissingBlobs, written, or named by an
         * ActionCache hit served within this time is never evicted (match Bazel's
         * --experimental_remote_cache_ttl, 3 h by default). 0: plain LRU.
         */
        leaseSeconds: z.number().min(0).default(3 * 3600),
        /** The digest functions offered (Capabilities); each has its own blobs and entries. */
        digestFunctions: z.array(z.enum(DIGEST_FUNCTION_NAMES)).min(1).default(['SHA256', 'BLAKE3']),
        /**
         * The function of requests that name none (Bazel before 7, Buck2): per instance name,
         * else `defaultDigestFunction`.
         */
        defaultDigestFunction: z.enum(DIGEST_FUNCTION_NAMES).default('SHA256'),
        instanceDigestFunctions: z.record(z.string(), z.enum(DIGEST_FUNCTION_NAMES)).default({}),
        /** Largest total of one BatchUpdateBlobs / BatchReadBlobs request. */
        maxBatchTotalSizeBytes: sizeBytes.default(4 * 1024 * 1024),
        /**
         * ByteStream uploads whose stream ended unfinished wait (on disk) to be resumed; past
         * these caps per server, the ones idle longest are dropped.
         */
        maxPendingUploads: z.number().int().min(0).default(1000),
        maxPendingUploadBytes: sizeBytes.default(1024 ** 3),
        /** Blobs up to this size are read whole and verified before a single byte is sent. */
        verifyBeforeServeBytes: sizeBytes.default(4 * 1024 * 1024),
        /**
         * With several `cas` nodes: keep each blob and ActionCache entry on this many of them, so
         * losing a node loses nothing (1: blobs sharded, the ActionCache on the first node).
         */
        replicas: z.number().int().min(1).default(1),
        /**
         * The CAS as a tree of backends and decorators (common/storage-config.ts). Unset: built
         * from `backend`, `dataDir` and `cas` (cas/default-storage.ts shows how).
         */
        contentAddressableStorage: blobStoreConfigSchema.optional(),
        /** The ActionCache likewise; unset: built from `backend`, `dataDir`, `cas` and `actionCache`. */
        actionCache: actionCacheConfigSchema.optional(),
      })
      .prefault({}),
    /** The Remote Asset API (Fetch, Push) on `reapi serve` and schedulers. */
    assets: z
      .object({
        enabled: z.boolean().default(true),
        /**
         * Fetch from loopback, private and link-local addresses too. Off by default: clients
         * must not reach the server's own network (or a cloud metadata service) through it.
         */
        allowPrivateNetworks: z.boolean().default(false),
        /** Largest download. */
        maxBytes: sizeBytes.default(4 * 1024 ** 3),
        /** Longest download (a request's own timeout may be shorter). */
        timeoutSeconds: z.number().positive().default(600),
      })
      .strict()
      .prefault({}),
    actionCache: z
      .object({
        /**
         * What UpdateActionResult from clients does: `allow` stores it, `deny` refuses with
         * PERMISSION_DENIED, `quarantine` keeps it unserved until a worker's execution agrees.
         * Default: `allow` on `reapi serve --no-execution` (a remote cache), `deny` where actions
         * are executed (only workers write) and on storage nodes (`reapi cas`), where only callers
         * presenting the fleet token write.
         */
        clientWrites: z.enum(['allow', 'deny', 'quarantine']).optional(),
        /**
         * Serve an entry only while all its blobs are in this node's CAS. Turn off on storage nodes
         * behind a scheduler with several --cas nodes: blobs are sharded, and the scheduler checks
         * completeness against all of them.
         */
        checkCompleteness: z.boolean().default(true),
        /** Largest total of inlined stdout/stderr/output files in one GetActionResult. */
        maxInlineBytes: sizeBytes.default(1024 * 1024),
      })
      .prefault({}),
    execution: z
      .object({
        /** Run actions (`reapi serve`: in-process queue and local workers). */
        enabled: z.boolean().default(true),
        /** Timeout for actions that set none. */
        defaultTimeoutSeconds: z.number().positive().default(900),
        /** Actions asking for more are refused with INVALID_ARGUMENT. */
        maxTimeoutSeconds: z.number().positive().default(3 * 3600),
        /** Route a job to a worker that recently ran jobs with the same inputs (its cache has them). */
        locality: z.boolean().default(true),
        /** Deliveries of one job before it fails (its workers kept dying). */
        maxAttempts: z.number().int().min(1).default(3),
        /**
         * A queued action whose platform no live worker can run fails with FAILED_PRECONDITION
         * after this long (its workers died or stopped after it was queued).
         */
        noWorkerGraceSeconds: z.number().positive().default(180),
      })
      .prefault({}),
    worker: z
      .object({
        /**
         * Where exec roots and the local content cache live (default: reapi-worker-<hash of dataDir>
         * under the system temp dir, which the sandbox user can reach; see worker/worker.ts).
         */
        workDir: z.string().optional(),
        /** Actions run at once by this worker (default: number of CPUs). */
        concurrency: z.number().int().min(1).optional(),
        /**
         * The worker's name in the queue, logs and reports; unique in the fleet. Default
         * HOSTNAME:PID, which containers sharing the host's network (same hostname, both pid 1)
         * do not make unique: give each one a name.
         */
        name: z.string().min(1).optional(),
        /** Size cap of the worker's local content cache. */
        cacheMaxBytes: sizeBytes.default(10 * 1024 ** 3),
        /** Platform properties this worker satisfies ('*' matches any value). */
        platform: z.record(z.string(), z.string()).default({ OSFamily: 'Linux', ISA: 'x86-64' }),
        /** Largest stdout or stderr kept per action. */
        maxOutputBytes: sizeBytes.default(64 * 1024 * 1024),
        /**
         * What one input root may expand to; larger ones are refused with INVALID_ARGUMENT before
         * anything is fetched or created (a Directory DAG of a few KiB can name 2^30 directories).
         */
        inputLimits: z
          .object({
            maxEntries: z.number().int().min(1).default(2_000_000),
            maxFiles: z.number().int().min(1).default(1_000_000),
            maxBytes: sizeBytes.default(64 * 1024 ** 3),
            maxDepth: z.number().int().min(1).default(512),
          })
          .strict()
          .prefault({}),
        /** Sandbox limits for every action. */
        limits: z
          .object({
            memoryBytes: sizeBytes.default(4 * 1024 ** 3),
            maxProcesses: z.number().int().min(0).default(1024),
            maxFileBytes: sizeBytes.default(0),
          })
          .prefault({}),
        /** Limits for actions whose platform has all the given properties; the first match wins. */
        platformLimits: z
          .array(
            z.object({
              match: z.record(z.string(), z.string()),
              limits: z
                .object({ memoryBytes: sizeBytes.optional(), maxProcesses: z.number().int().min(0).optional(), maxFileBytes: sizeBytes.optional() })
                .strict(),
            }),
          )
          .default([]),
        /** Cargo build scripts (platform `cargo-build-script`). */
        buildScripts: z
          .object({
            /**
             * Host paths build scripts may see at most (read-only). A build's own policy can only
             * narrow this; one naming a path outside it is refused. Default /usr: what every
             * ordinary action sees.
             */
            visiblePaths: z
              .array(z.string().refine((p) => p.startsWith('/') && !p.split('/').includes('..'), 'an absolute path without ".."'))
              .default(['/usr']),
            /**
             * Rust toolchain directories (each with bin/rustc and lib/) build scripts may ask for
             * by release. Default: /usr and every rustup toolchain of the worker's user.
             */
            toolchains: z.array(z.string().refine((p) => p.startsWith('/') && !p.split('/').includes('..'), 'an absolute path without ".."')).optional(),
          })
          .strict()
          .prefault({}),
        /** Docker engine for actions whose platform has `container-image` (worker/runners/docker-runner.ts). */
        docker: z
          .object({
            /**
             * true: require a reachable engine; false: never run containers; 'auto' (default): use
             * the engine at `host`, $DOCKER_HOST or /var/run/docker.sock when it answers. A worker
             * with an engine adds `container-image: '*'` to its platform.
             */
            enabled: z.union([z.boolean(), z.literal('auto')]).default('auto'),
            /** unix:///path or tcp://host:port (default $DOCKER_HOST, else unix:///var/run/docker.sock). */
            host: z.string().optional(),
            /** uid/gid actions run as in their containers. */
            uid: z.number().int().min(1).default(65534),
            gid: z.number().int().min(1).default(65534),
            /** Containers created and started ahead of time per image and limits (0: on demand). */
            warmContainers: z.number().int().min(0).default(2),
          })
          .strict()
          .prefault({}),
      })
      .prefault({}),
    verification: z
      .object({
        /** Fraction of executed actions run twice, under different variations, before caching. */
        verifyRate: z.number().min(0).max(1).default(0),
        /** Fraction of served cache hits whose action is re-run in the background and compared. */
        auditRate: z.number().min(0).max(1).default(0),
        /** What the client gets for a nondeterministic action: the first result with a warning, or a failure. */
        onMismatch: z.enum(['warn', 'fail']).default('warn'),
        /** Opt-in: run the second execution under libfaketime (a later wall clock). */
        faketime: z.boolean().default(false),
        /** Opt-in: serve the second run's exec root through disorderfs (shuffled directory order). */
        directoryOrder: z.boolean().default(false),
        /**
         * Run the second execution on another worker when one is free (different host, kernel
         * state and caches); otherwise, or when it has not started within this many ms, here.
         * 0 = always here.
         */
        otherWorkerStartMs: z.number().int().min(0).default(2000),
      })
      .prefault({}),
    metrics: z
      .object({
        /**
         * Instance names kept as `instance` label values; any other name a client sends is counted
         * as "(other)". Unset: the first 16 names seen.
         */
        instanceNames: z.array(z.string()).optional(),
      })
      .strict()
      .prefault({}),
    /** Redis URL: BullMQ queue and operation state (a fleet). Unset: in-process queue. */
    redis: z.string().optional(),
    /** PEM CA bundle that signed a `rediss://` server's certificate (default: the system roots). */
    redisCa: z.string().optional(),
    /** Storage nodes (host:port) for scheduler and workers; several are sharded by digest. */
    cas: z.array(z.string()).default([]),
    /** Largest single gRPC message accepted (ByteStream chunks and batches fit well under it). */
    maxMessageBytes: sizeBytes.default(64 * 1024 * 1024),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

/** Deep-merge plain objects; later sources win; `undefined` never overrides. */
export function mergeConfig(...sources: Array<Record<string, unknown> | undefined>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const src of sources) {
    if (!src) continue;
    for (const [k, v] of Object.entries(src)) {
      if (v === undefined) continue;
      const prev = out[k];
      if (isPlainObject(v) && isPlainObject(prev)) out[k] = mergeConfig(prev, v);
      else out[k] = v;
    }
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class ConfigError extends Error {}

/** Validate a config object; the error lists every bad field by path. */
export function parseConfig(input: unknown, source = 'config'): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ConfigError(`invalid ${source}:\n${lines.join('\n')}`);
  }
  return result.data;
}

/** Read a JSON config file over `base` (e.g. a role's defaults), merge overrides (flags, environment) on top, validate. */
export function loadConfig(file: string | undefined, overrides: Record<string, unknown>, base: Record<string, unknown> = {}): Config {
  let fromFile: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    try {
      fromFile = JSON.parse(text) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
    }
  }
  return parseConfig(mergeConfig(base, fromFile, overrides), file ? `config file ${file}` : 'configuration');
}
