// Flags shared by the roles, and how they map onto the config schema.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { loadConfig, parseSize, type Config } from '../common/config.ts';
import { wrapPlain } from '../common/error-text.ts';

export interface CommonFlags {
  config?: string;
  port?: string;
  httpPort?: string;
  listen?: string;
  dataDir?: string;
  maxCasBytes?: string;
  storage?: 'disk' | 'memory';
  logLevel?: string;
  redis?: string;
  cas?: string;
  workDir?: string;
  concurrency?: string;
  workerName?: string;
  execution?: boolean;
  verifyRate?: string;
  auditRate?: string;
  onMismatch?: 'warn' | 'fail';
  varyClock?: boolean;
  varyDirectoryOrder?: boolean;
  dockerHost?: string;
  fleetTokenFile?: string;
  redisCa?: string;
  replicas?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  tokensFile?: string;
  insecure?: boolean;
  tlsCa?: string;
  tlsClientCert?: string;
  tlsClientKey?: string;
  tokenFile?: string;
}

function rate(name: string) {
  return (value: string): string => {
    const n = Number(value);
    if (!/^\d*\.?\d+$/.test(value) || n < 0 || n > 1) throw new InvalidArgumentError(`${name} must be a number from 0 to 1, got "${value}"`);
    return value;
  };
}

function int(name: string) {
  return (value: string): string => {
    if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${name} must be a non-negative integer, got "${value}"`);
    return value;
  };
}

export function addCommonFlags(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'JSON config file (validated; flags override it)', process.env.REAPI_CONFIG)
    .option('--port <port>', 'gRPC port (default 8980; storage nodes 8990; 0 picks a free one)', int('--port'))
    .option('--http-port <port>', 'HTTP port for /metrics and /healthz (default 8981; storage nodes 8991, workers 8992; 0 picks a free one)', int('--http-port'))
    .option('--listen <address>', 'address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)')
    .option('--fleet-token-file <file>', 'shared secret of the fleet\'s storage nodes, schedulers and workers (default $REAPI_FLEET_TOKEN)')
    .option('--tls-cert <file>', 'serve gRPC and HTTP over TLS with this PEM certificate chain (re-read when it changes)')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option('--tls-client-ca <file>', 'require client certificates signed by this PEM CA (mTLS); their subject CN or SAN is the principal')
    .option('--tokens-file <file>', 'static bearer tokens: lines "PRINCIPAL TOKEN" (permissions in auth.principals)')
    .option('--insecure', 'allow listening beyond loopback without TLS and credentials')
    .option('--data-dir <dir>', 'where blobs and the action cache live (default .reapi-data)')
    .option('--max-cas-bytes <size>', 'CAS size cap, e.g. 50GiB; least recently used blobs are evicted past it')
    .addOption(new Option('--storage <backend>', 'blob storage backend').choices(['disk', 'memory']))
    .addOption(
      new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    );
}

/** Flags of the roles that queue or run actions. */
export function addExecutionFlags(cmd: Command, opts: { storageNodes: boolean }): Command {
  cmd
    .option('--redis <url>', 'Redis for the BullMQ queue and operation state: redis://[:PASSWORD@]HOST:PORT or rediss:// for TLS (default $REDIS_URL)')
    .option('--redis-ca <file>', 'PEM CA that signed a rediss:// server\'s certificate')
    .option('--work-dir <dir>', 'exec roots and the local content cache (default: under the system temp dir)')
    .option('--concurrency <n>', 'actions run at once by the local worker (default: number of CPUs)', int('--concurrency'))
    .option('--worker-name <name>', "this worker's name in the queue and reports, unique in the fleet (default HOSTNAME:PID)")
    .option('--docker-host <url>', 'Docker engine for container-image actions, unix:///path or tcp://host:port (default $DOCKER_HOST)');
  cmd
    .option('--verify-rate <r>', 'fraction of executed actions run twice before their result may be cached (0 to 1)', rate('--verify-rate'))
    .option('--audit-rate <r>', 'fraction of served cache hits re-executed in the background and compared (0 to 1)', rate('--audit-rate'))
    .addOption(new Option('--on-mismatch <what>', 'a nondeterministic action answers its first result with a warning, or fails').choices(['warn', 'fail']))
    .option('--vary-clock', 'opt-in variation: run the second execution under libfaketime (a later wall clock)')
    .option('--vary-directory-order', 'opt-in variation: serve the second execution its inputs through disorderfs (shuffled directory order)');
  if (opts.storageNodes) {
    cmd.option('--cas <addresses>', 'storage nodes HOST:PORT, grpc://HOST:PORT or grpcs://HOST:PORT, comma-separated (blobs sharded by digest)');
    cmd.option('--replicas <n>', 'keep each blob and ActionCache entry on N of the --cas nodes (default 1: sharded, the ActionCache on the first)', int('--replicas'));
    addClientTlsFlags(cmd);
  }
  return cmd;
}

/** How this process calls reapi servers: TLS trust, client certificate, bearer token. */
export function addClientTlsFlags(cmd: Command): Command {
  return cmd
    .option('--tls-ca <file>', 'PEM CA to verify grpcs:// servers with (default: the system roots)')
    .option('--tls-client-cert <file>', 'PEM client certificate to present to grpcs:// servers (mTLS)')
    .option('--tls-client-key <file>', 'the PEM private key of --tls-client-cert')
    .option('--token-file <file>', 'file holding the bearer token to send (default $REAPI_TOKEN_FILE)');
}

/**
 * Default ports of each role, distinct where roles share a machine in the fleet recipe: clients
 * reach serve and the scheduler on 8980; storage nodes listen on 8990; workers have only their
 * HTTP side (/metrics, /healthz).
 */
export const ROLE_PORTS: Record<string, { port: number; httpPort: number }> = {
  serve: { port: 8980, httpPort: 8981 },
  scheduler: { port: 8980, httpPort: 8981 },
  cas: { port: 8990, httpPort: 8991 },
  worker: { port: 8980, httpPort: 8992 },
};

/** Config file (over the role's default ports), then environment, then flags. */
export function configFromFlags(flags: CommonFlags, role?: string): Config {
  let maxBytes: number | undefined;
  if (flags.maxCasBytes !== undefined) {
    maxBytes = parseSize(flags.maxCasBytes);
    if (maxBytes === undefined) throw new Error(`--max-cas-bytes: "${flags.maxCasBytes}" is not a size (e.g. 10GiB)`);
  }
  let fleetToken = process.env.REAPI_FLEET_TOKEN || undefined;
  if (flags.fleetTokenFile !== undefined) {
    try {
      fleetToken = readFileSync(flags.fleetTokenFile, 'utf8').trim();
    } catch (err) {
      throw wrapPlain(err, `--fleet-token-file: cannot read ${flags.fleetTokenFile}`);
    }
  }
  return loadConfig(flags.config, {
    fleetToken,
    port: flags.port === undefined ? undefined : Number(flags.port),
    httpPort: flags.httpPort === undefined ? undefined : Number(flags.httpPort),
    listen: flags.listen,
    dataDir: flags.dataDir ?? process.env.REAPI_DATA_DIR,
    logLevel: flags.logLevel ?? process.env.REAPI_LOG_LEVEL,
    storage: { backend: flags.storage, maxBytes, replicas: flags.replicas === undefined ? undefined : Number(flags.replicas) },
    redis: flags.redis ?? process.env.REDIS_URL,
    redisCa: flags.redisCa,
    cas: flags.cas?.split(',').map((a) => a.trim()).filter(Boolean),
    execution: { enabled: flags.execution === false ? false : undefined },
    verification: {
      verifyRate: flags.verifyRate === undefined ? undefined : Number(flags.verifyRate),
      auditRate: flags.auditRate === undefined ? undefined : Number(flags.auditRate),
      onMismatch: flags.onMismatch,
      faketime: flags.varyClock,
      directoryOrder: flags.varyDirectoryOrder,
    },
    tls: { cert: flags.tlsCert, key: flags.tlsKey, clientCa: flags.tlsClientCa },
    auth: { tokensFile: flags.tokensFile, insecure: flags.insecure },
    client: { ca: flags.tlsCa, cert: flags.tlsClientCert, key: flags.tlsClientKey, tokenFile: flags.tokenFile ?? process.env.REAPI_TOKEN_FILE },
    worker: {
      workDir: flags.workDir,
      concurrency: flags.concurrency === undefined ? undefined : Number(flags.concurrency),
      name: flags.workerName,
      docker: { host: flags.dockerHost },
    },
  }, role ? { ...ROLE_PORTS[role] } : {});
}
