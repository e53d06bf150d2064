// A REAPI client library: describe an input tree and a Command in a few lines, upload what the
// server is missing, look the action up in the ActionCache, Execute it and follow the Operation
// stream, and read stdout, stderr and outputs back from the CAS. The `reapi` client commands
// (cargo, expand) and the tests use it; failures are reported wherever the server put them (the
// call's gRPC status with `grpc-status-details-bin`, or ExecuteResponse.status).
import * as grpc from '@grpc/grpc-js';
import type { Digest } from '../common/digest.ts';
import { SHA256, type DigestFunction } from '../common/digest-function.ts';
import { REQUEST_METADATA_KEY } from '../common/grpc.ts';
import { readResourceName, writeResourceName } from '../common/resource-name.ts';
import type { Config } from '../common/config.ts';
import { parseEndpoint } from '../common/endpoint.ts';
import { clientSettings, clientToken, grpcChannelCredentials, metadataInterceptor } from '../common/tls.ts';

export type ClientSettings = Config['client'];
import {
  decode,
  encode,
  services,
  unpackAny,
  type ActionCacheClient,
  type ByteStreamClient,
  type CapabilitiesClient,
  type ContentAddressableStorageClient,
  type ExecutionClient,
  type MessageInput,
  type MessageOutput,
  type OperationsClient,
} from '../protos/index.ts';
import { byteStreamRead, byteStreamWrite, unary } from './grpc-calls.ts';
import { randomUUID } from 'node:crypto';

export type Operation = MessageOutput<'Operation'>;
export type ExecuteResponse = MessageOutput<'ExecuteResponse'>;
export type ActionResult = MessageOutput<'ActionResult'>;
export type Stage = MessageOutput<'ExecuteOperationMetadata'>['stage'];

// ---------------------------------------------------------------------------
// Clients

export interface ExecClients {
  address: string;
  instance: string;
  /** How this client hashes (trees, uploads); SHA-256 unless connected otherwise. */
  digestFunction: DigestFunction;
  /** The `digest_function` field of requests: set (Bazel 7+) or left UNKNOWN (older clients, Buck2). */
  digestFunctionField: DigestFunction['name'] | 'UNKNOWN';
  capabilities: CapabilitiesClient;
  cas: ContentAddressableStorageClient;
  byteStream: ByteStreamClient;
  actionCache: ActionCacheClient;
  execution: ExecutionClient;
  operations: OperationsClient;
  close(): void;
}

const CLIENT_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
};

/**
 * Typed clients of every REAPI service at `endpoint` (host:port, grpc://host:port or
 * grpcs://host:port), for one instance name; `client` says whom to trust and what to present
 * (default: from REAPI_TLS_CA, REAPI_TLS_CLIENT_CERT, REAPI_TLS_CLIENT_KEY, REAPI_TOKEN_FILE).
 */
export function connectExec(
  endpoint: string,
  instance = '',
  client: ClientSettings = clientSettings(),
  hashing: { digestFunction?: DigestFunction; sendDigestFunction?: boolean } = {},
): ExecClients {
  const digestFunction = hashing.digestFunction ?? SHA256;
  const digestFunctionField = (hashing.sendDigestFunction ?? hashing.digestFunction !== undefined) ? digestFunction.name : 'UNKNOWN';
  const { target: address, tls } = parseEndpoint(endpoint);
  const creds = grpcChannelCredentials(tls, client);
  const token = clientToken(client);
  const options = token === undefined ? CLIENT_OPTIONS : { ...CLIENT_OPTIONS, interceptors: [metadataInterceptor({ authorization: `Bearer ${token}` })] };
  const c = {
    capabilities: new services.Capabilities(address, creds, options),
    cas: new services.ContentAddressableStorage(address, creds, options),
    byteStream: new services.ByteStream(address, creds, options),
    actionCache: new services.ActionCache(address, creds, options),
    execution: new services.Execution(address, creds, options),
    operations: new services.Operations(address, creds, options),
  };
  return {
    address,
    instance,
    digestFunction,
    digestFunctionField,
    ...c,
    close: () => {
      for (const client of Object.values(c)) client.close();
    },
  };
}

// ---------------------------------------------------------------------------
// Input trees

export class FileEntry {
  constructor(
    readonly content: Buffer,
    readonly executable: boolean,
    /** Its digest when the caller knows it already (a large file hashed once and reused). */
    readonly digest?: Digest,
  ) {}
}

export class SymlinkEntry {
  constructor(readonly target: string) {}
}

/** A directory: name -> file contents (string/Buffer), `exe(...)`, `link(...)` or a subdirectory. */
export interface TreeSpec {
  [name: string]: string | Buffer | FileEntry | SymlinkEntry | TreeSpec;
}

export const file = (content: string | Buffer): FileEntry => new FileEntry(Buffer.from(content), false);
export const exe = (content: string | Buffer): FileEntry => new FileEntry(Buffer.from(content), true);
export const link = (target: string): SymlinkEntry => new SymlinkEntry(target);

/** Blobs by hash: what to upload. */
export type Blobs = Map<string, Buffer>;

function addBlob(blobs: Blobs, data: Buffer, fn: DigestFunction, known?: Digest): Digest {
  const d = known ?? fn.digestOf(data);
  blobs.set(d.hash, data);
  return d;
}

const byUtf8 = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * The canonical Directory tree of `spec` (entries sorted by UTF-8 bytes, no default-valued
 * fields); every Directory and file blob goes into `blobs`. Returns the root digest.
 */
export function buildTree(spec: TreeSpec, blobs: Blobs, fn: DigestFunction = SHA256): Digest {
  const dir: MessageInput<'Directory'> = {};
  const files: Array<MessageInput<'FileNode'>> = [];
  const directories: Array<MessageInput<'DirectoryNode'>> = [];
  const symlinks: Array<MessageInput<'SymlinkNode'>> = [];
  for (const name of Object.keys(spec).sort(byUtf8)) {
    const e = spec[name]!;
    if (typeof e === 'string' || Buffer.isBuffer(e)) {
      files.push({ name, digest: addBlob(blobs, Buffer.from(e), fn) });
    } else if (e instanceof FileEntry) {
      const digest = addBlob(blobs, e.content, fn, e.digest);
      files.push(e.executable ? { name, digest, is_executable: true } : { name, digest });
    } else if (e instanceof SymlinkEntry) {
      symlinks.push({ name, target: e.target });
    } else {
      directories.push({ name, digest: buildTree(e, blobs, fn) });
    }
  }
  if (files.length) dir.files = files;
  if (directories.length) dir.directories = directories;
  if (symlinks.length) dir.symlinks = symlinks;
  return addBlob(blobs, encode('Directory', dir), fn);
}

/** Store an arbitrary message (e.g. a deliberately malformed Directory) as a blob. */
export function addMessage<K extends 'Directory' | 'Command' | 'Action'>(blobs: Blobs, type: K, msg: MessageInput<K>, fn: DigestFunction = SHA256): Digest {
  return addBlob(blobs, encode(type, msg), fn);
}

// ---------------------------------------------------------------------------
// Actions

export interface ActionSpec {
  /** The command line; see also `sh`. */
  argv?: string[];
  /** Shorthand for argv ['/bin/bash', '-c', script]. */
  sh?: string;
  env?: Record<string, string>;
  /** Input tree; or `inputRoot` for a hand-made root. Default: the empty directory. */
  inputs?: TreeSpec;
  inputRoot?: Digest;
  outputFiles?: string[];
  outputDirectories?: string[];
  outputPaths?: string[];
  workingDirectory?: string;
  /** Command.platform properties. */
  platform?: Record<string, string>;
  /** Action.timeout in seconds (fractions allowed). */
  timeoutSeconds?: number;
  doNotCache?: boolean;
  /**
   * Action.salt. Default: a random one, so that each prepared action is new (what tests want).
   * Clients that want cache hits pass '' (no salt) or a stable value.
   */
  salt?: string;
  /** How the action and its inputs are hashed (default SHA-256); upload and execute with a client of the same. */
  digestFunction?: DigestFunction;
  /** Action.platform too (REAPI 2.2+; Bazel sets both, Buck2 only Command.platform). */
  actionPlatform?: boolean;
}

export interface PreparedAction {
  actionDigest: Digest;
  commandDigest: Digest;
  inputRootDigest: Digest;
  command: MessageInput<'Command'>;
  /** Every blob the action needs (Action, Command, Directories, files). */
  blobs: Blobs;
}

/** Build Action, Command and input tree; nothing is uploaded yet. A random salt unless `salt` is set. */
export function prepareAction(spec: ActionSpec): PreparedAction {
  const blobs: Blobs = new Map();
  const fn = spec.digestFunction ?? SHA256;
  const argv = spec.argv ?? (spec.sh !== undefined ? ['/bin/bash', '-c', spec.sh] : undefined);
  if (!argv) throw new Error('prepareAction: argv or sh is required');
  const command: MessageInput<'Command'> = { arguments: argv };
  const env = Object.entries(spec.env ?? {}).sort(([a], [b]) => byUtf8(a, b));
  if (env.length) command.environment_variables = env.map(([name, value]) => ({ name, value }));
  if (spec.outputFiles?.length) command.output_files = [...spec.outputFiles].sort(byUtf8);
  if (spec.outputDirectories?.length) command.output_directories = [...spec.outputDirectories].sort(byUtf8);
  if (spec.outputPaths?.length) command.output_paths = [...spec.outputPaths].sort(byUtf8);
  if (spec.workingDirectory) command.working_directory = spec.workingDirectory;
  const props = Object.entries(spec.platform ?? {}).sort(([a], [b]) => byUtf8(a, b));
  if (props.length) command.platform = { properties: props.map(([name, value]) => ({ name, value })) };
  const commandDigest = addMessage(blobs, 'Command', command, fn);
  const inputRootDigest = spec.inputRoot ?? buildTree(spec.inputs ?? {}, blobs, fn);
  const action: MessageInput<'Action'> = { command_digest: commandDigest, input_root_digest: inputRootDigest };
  if (spec.actionPlatform && command.platform) action.platform = command.platform;
  if (spec.timeoutSeconds !== undefined) {
    const seconds = Math.floor(spec.timeoutSeconds);
    const nanos = Math.round((spec.timeoutSeconds - seconds) * 1e9);
    action.timeout = nanos ? { seconds, nanos } : { seconds };
  }
  if (spec.doNotCache) action.do_not_cache = true;
  action.salt = Buffer.from(spec.salt ?? randomUUID());
  const actionDigest = addMessage(blobs, 'Action', action, fn);
  return { actionDigest, commandDigest, inputRootDigest, command, blobs };
}

const BATCH_LIMIT = 2 * 1024 * 1024;

/** Upload blobs: small ones with BatchUpdateBlobs, big ones with ByteStream.Write. */
export async function uploadBlobs(c: ExecClients, blobs: Iterable<Buffer>): Promise<void> {
  let batch: Buffer[] = [];
  let size = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    const res = await unary(c.cas, c.cas.BatchUpdateBlobs, {
      instance_name: c.instance,
      requests: batch.map((data) => ({ digest: c.digestFunction.digestOf(data), data })),
      digest_function: c.digestFunctionField,
    });
    for (const r of res.responses) if (r.status && r.status.code !== 0) throw new Error(`upload failed: ${r.status.message}`);
    batch = [];
    size = 0;
  };
  for (const data of blobs) {
    if (data.length === 0) continue;
    if (data.length > BATCH_LIMIT) {
      await byteStreamWrite(c.byteStream, writeResourceName(c.instance, randomUUID(), c.digestFunction.digestOf(data), 'identity', resourceFunction(c)), data);
      continue;
    }
    if (size + data.length > BATCH_LIMIT) await flush();
    batch.push(data);
    size += data.length;
  }
  await flush();
}

/** prepareAction + upload everything (except blobs for which `skip(hash)` is true). */
export async function uploadAction(c: ExecClients, spec: ActionSpec, skip: (hash: string) => boolean = () => false): Promise<PreparedAction> {
  const prepared = prepareAction({ digestFunction: c.digestFunction, ...spec });
  await uploadBlobs(c, [...prepared.blobs].filter(([hash]) => !skip(hash)).map(([, data]) => data));
  return prepared;
}

/** Upload only the blobs the server does not have yet (one FindMissingBlobs per call). */
export async function uploadMissing(c: ExecClients, blobs: Blobs): Promise<{ uploaded: number; present: number }> {
  const digests = [...blobs.values()].filter((b) => b.length > 0).map((b) => c.digestFunction.digestOf(b));
  if (digests.length === 0) return { uploaded: 0, present: 0 };
  const res = await unary(c.cas, c.cas.FindMissingBlobs, { instance_name: c.instance, blob_digests: digests, digest_function: c.digestFunctionField });
  const missing = res.missing_blob_digests.map((d) => blobs.get(d.hash)).filter((b): b is Buffer => b !== undefined);
  await uploadBlobs(c, missing);
  return { uploaded: missing.length, present: digests.length - missing.length };
}

/**
 * The ActionCache entry of `actionDigest`, or undefined when there is none (NOT_FOUND). `inline`
 * asks for stdout and stderr inline (saves two reads when they are printed right away), and
 * `inlineOutputFiles` the contents of those output files (the server inlines what fits its budget);
 * `requestMetadata` names the target and mnemonic for the server's logs and audits.
 */
export async function lookupActionResult(
  c: ExecClients,
  actionDigest: Digest,
  opts: { inline?: boolean; inlineOutputFiles?: string[]; requestMetadata?: MessageInput<'RequestMetadata'> } = {},
): Promise<ActionResult | undefined> {
  const req: MessageInput<'GetActionResultRequest'> = { instance_name: c.instance, action_digest: actionDigest, digest_function: c.digestFunctionField };
  if (opts.inline) Object.assign(req, { inline_stdout: true, inline_stderr: true });
  if (opts.inlineOutputFiles?.length) req.inline_output_files = opts.inlineOutputFiles;
  const metadata = opts.requestMetadata ? requestMetadataHeader(opts.requestMetadata) : new grpc.Metadata();
  try {
    return await new Promise<ActionResult>((resolve, reject) => {
      c.actionCache.GetActionResult(req, metadata, (err, res) => (err ? reject(err) : res ? resolve(res) : reject(new Error('GetActionResult ended without a response'))));
    });
  } catch (err) {
    if (isServiceError(err) && err.code === grpc.status.NOT_FOUND) return undefined;
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Execute

export interface ExecuteOptions {
  skipCacheLookup?: boolean;
  priority?: number;
  /** Called with each Operation as it arrives (e.g. to start WaitExecution on its name). */
  onOperation?: (op: Operation) => void;
  deadlineMs?: number;
  /** Sent as the REAPI RequestMetadata header: names the target and mnemonic in logs and reports. */
  requestMetadata?: MessageInput<'RequestMetadata'>;
}

/** The call metadata carrying a REAPI RequestMetadata. */
export function requestMetadataHeader(md: MessageInput<'RequestMetadata'>): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set(REQUEST_METADATA_KEY, encode('RequestMetadata', md));
  return metadata;
}

export interface ExecuteOutcome {
  /** Operation name (from the first message). */
  name: string;
  operations: Operation[];
  /** ExecuteOperationMetadata.stage of each message, in order. */
  stages: Stage[];
  /** The final ExecuteResponse. */
  response: ExecuteResponse;
}

/** The stream of Operations of an Execute or WaitExecution call, to the last (done) one. */
export async function followStream(stream: grpc.ClientReadableStream<Operation>, opts: ExecuteOptions = {}): Promise<ExecuteOutcome> {
  const operations: Operation[] = [];
  for await (const op of stream as AsyncIterable<Operation>) {
    operations.push(op);
    opts.onOperation?.(op);
  }
  const last = operations.at(-1);
  if (!last) throw new Error('the operation stream ended without any Operation');
  if (!last.done) throw new Error(`the operation stream ended before the operation was done (${operations.length} messages)`);
  if (last.result !== 'response' || !last.response) {
    throw new Error(`the last Operation carries no response: ${JSON.stringify(last.error ?? last.result)}`);
  }
  return {
    name: operations[0]!.name,
    operations,
    stages: operations.map((op) => (op.metadata ? unpackAny(op.metadata, 'ExecuteOperationMetadata').stage : 'UNKNOWN')),
    response: unpackAny(last.response, 'ExecuteResponse'),
  };
}

function deadline(opts: ExecuteOptions): grpc.CallOptions {
  return { deadline: Date.now() + (opts.deadlineMs ?? 60_000) };
}

/** Execute and collect the stream; rejects with the grpc.ServiceError when the call fails. */
export function execute(c: ExecClients, actionDigest: Digest, opts: ExecuteOptions = {}): Promise<ExecuteOutcome> {
  const req: MessageInput<'ExecuteRequest'> = { instance_name: c.instance, action_digest: actionDigest, digest_function: c.digestFunctionField };
  if (opts.skipCacheLookup) req.skip_cache_lookup = true;
  if (opts.priority !== undefined) req.execution_policy = { priority: opts.priority };
  const metadata = opts.requestMetadata ? requestMetadataHeader(opts.requestMetadata) : new grpc.Metadata();
  return followStream(c.execution.Execute(req, metadata, deadline(opts)), opts);
}

export function waitExecution(c: ExecClients, name: string, opts: ExecuteOptions = {}): Promise<ExecuteOutcome> {
  return followStream(c.execution.WaitExecution({ name }, deadline(opts)), opts);
}

/** uploadAction + execute; throws unless the response's status is OK. */
export async function run(c: ExecClients, spec: ActionSpec, opts: ExecuteOptions = {}): Promise<ExecuteOutcome & { action: PreparedAction; result: ActionResult }> {
  const action = await uploadAction(c, spec);
  const outcome = await execute(c, action.actionDigest, opts);
  const st = outcome.response.status;
  if (st && st.code !== 0) throw new Error(`Execute answered status ${grpc.status[st.code] ?? st.code}: ${st.message}`);
  if (!outcome.response.result) throw new Error('ExecuteResponse without a result');
  return { ...outcome, action, result: outcome.response.result };
}

// ---------------------------------------------------------------------------
// Failures, wherever they are reported

export interface FailureStatus {
  code: number;
  message: string;
  /** 'call': the Execute call failed; 'response': ExecuteResponse.status. */
  where: 'call' | 'response';
  /** MISSING etc. violations of a google.rpc.PreconditionFailure detail, if any. */
  violations: Array<{ type: string; subject: string; description: string }>;
  /** The response, when there was one. */
  response?: ExecuteResponse;
}

function violationsOf(details: ReadonlyArray<MessageOutput<'Any'>>): FailureStatus['violations'] {
  const out: FailureStatus['violations'] = [];
  for (const d of details) {
    if (!d.type_url.endsWith('/google.rpc.PreconditionFailure')) continue;
    for (const v of unpackAny(d, 'PreconditionFailure').violations) out.push({ type: v.type, subject: v.subject, description: v.description });
  }
  return out;
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number';
}

/**
 * Execute an action expected to fail, and return the failure from wherever the server put it:
 * the gRPC status of the call (details from `grpc-status-details-bin`) or ExecuteResponse.status.
 * Throws when the action succeeded (status OK).
 */
export async function executeFailure(c: ExecClients, actionDigest: Digest, opts: ExecuteOptions = {}): Promise<FailureStatus> {
  let outcome: ExecuteOutcome;
  try {
    outcome = await execute(c, actionDigest, opts);
  } catch (err) {
    if (!isServiceError(err)) throw err;
    const raw = err.metadata?.get('grpc-status-details-bin')[0];
    const details = raw ? decode('Status', Buffer.isBuffer(raw) ? raw : Buffer.from(raw)).details : [];
    return { code: err.code, message: err.details, where: 'call', violations: violationsOf(details) };
  }
  const st = outcome.response.status;
  if (!st || st.code === 0) {
    throw new Error(`expected a failure, but the action completed with exit code ${outcome.response.result?.exit_code}`);
  }
  return { code: st.code, message: st.message, where: 'response', violations: violationsOf(st.details), response: outcome.response };
}

// ---------------------------------------------------------------------------
// Reading results back

export async function readBlob(c: ExecClients, digest: Digest | MessageOutput<'Digest'> | null | undefined): Promise<Buffer> {
  if (!digest || Number(digest.size_bytes) === 0) return Buffer.alloc(0);
  return byteStreamRead(c.byteStream, readResourceName(c.instance, { hash: digest.hash, size_bytes: Number(digest.size_bytes) }, 'identity', resourceFunction(c)));
}

/** The digest function a resource name spells out: the client's, unless it sends none (then the server's default applies). */
function resourceFunction(c: ExecClients): DigestFunction {
  return c.digestFunctionField === 'UNKNOWN' ? SHA256 : c.digestFunction;
}

export async function stdoutOf(c: ExecClients, result: ActionResult): Promise<string> {
  return (await readBlob(c, result.stdout_digest)).toString('utf8');
}

export async function stderrOf(c: ExecClients, result: ActionResult): Promise<string> {
  return (await readBlob(c, result.stderr_digest)).toString('utf8');
}

/** Contents of an output file by its declared path (undefined when absent from the result). */
export async function outputFile(c: ExecClients, result: ActionResult, path: string): Promise<{ data: Buffer; executable: boolean } | undefined> {
  const f = result.output_files.find((o) => o.path === path);
  if (!f) return undefined;
  // Inlined by GetActionResult (inline_output_files): no read needed.
  const inlined = f.contents.length > 0 && f.contents.length === Number(f.digest?.size_bytes ?? -1);
  return { data: inlined ? f.contents : await readBlob(c, f.digest), executable: f.is_executable };
}

/** An output directory's Tree, flattened to path -> {data, executable} (symlinks as `-> target`). */
export async function outputTree(
  c: ExecClients,
  result: ActionResult,
  path: string,
): Promise<Map<string, { data: Buffer; executable: boolean } | { symlink: string } | { dir: true }> | undefined> {
  const d = result.output_directories.find((o) => o.path === path);
  if (!d) return undefined;
  const tree = decode('Tree', await readBlob(c, d.tree_digest));
  const byDigest = new Map<string, MessageOutput<'Directory'>>();
  for (const child of tree.children) byDigest.set(c.digestFunction.hash(encode('Directory', child as MessageInput<'Directory'>)), child);
  const out = new Map<string, { data: Buffer; executable: boolean } | { symlink: string } | { dir: true }>();
  const walk = async (dir: MessageOutput<'Directory'>, prefix: string): Promise<void> => {
    for (const f of dir.files) out.set(prefix + f.name, { data: await readBlob(c, f.digest), executable: f.is_executable });
    for (const s of dir.symlinks) out.set(prefix + s.name, { symlink: s.target });
    for (const sub of dir.directories) {
      const child = byDigest.get(sub.digest!.hash);
      if (!child) throw new Error(`Tree ${path}: child Directory ${sub.digest!.hash} of "${prefix}${sub.name}" is not in the Tree`);
      out.set(prefix + sub.name, { dir: true });
      await walk(child, `${prefix}${sub.name}/`);
    }
  };
  if (!tree.root) throw new Error(`Tree ${path} has no root`);
  await walk(tree.root, '');
  return out;
}

/** The ActionCache entry of an action, undefined when there is none (what tests call it). */
export const cachedResult = lookupActionResult;
