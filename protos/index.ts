/**
 * Typed loader for the REAPI v2 protos under protos/. (Longer than most files: it is the one
 * table of every message and service type the project uses, kept in one place on purpose.)
 *
 * - `services`: gRPC client constructors (each with `.service`, the
 *   grpc.ServiceDefinition to pass to `server.addService`).
 * - `root`: a protobufjs Root of the same files, loaded with keepCase.
 * - `encode` / `decode`: typed by short message name (see `Messages`).
 *   `encode` produces the CANONICAL encoding used for content hashing.
 * - `packAny` / `unpackAny`: google.protobuf.Any helpers.
 *
 * Types come from protos/generated/ (`npm run gen:protos`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { MessageTypeDefinition } from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import type { ProtoGrpcType as RemoteExecutionGrpc } from './generated/remote_execution';
import type { ProtoGrpcType as ByteStreamGrpc } from './generated/bytestream';
import type { ProtoGrpcType as RemoteAssetGrpc } from './generated/remote_asset';
import type { ProtoGrpcType as ErrorDetailsGrpc } from './generated/error_details';
import type { ProtoGrpcType as ReapiGrpc } from './generated/reapi';
import type { Any, Any__Output } from './generated/google/protobuf/Any';

export type { ActionCacheClient, ActionCacheDefinition, ActionCacheHandlers } from './generated/build/bazel/remote/execution/v2/ActionCache';
export type { CapabilitiesClient, CapabilitiesDefinition, CapabilitiesHandlers } from './generated/build/bazel/remote/execution/v2/Capabilities';
export type {
  ContentAddressableStorageClient,
  ContentAddressableStorageDefinition,
  ContentAddressableStorageHandlers,
} from './generated/build/bazel/remote/execution/v2/ContentAddressableStorage';
export type { ExecutionClient, ExecutionDefinition, ExecutionHandlers } from './generated/build/bazel/remote/execution/v2/Execution';
export type { ByteStreamClient, ByteStreamDefinition, ByteStreamHandlers } from './generated/google/bytestream/ByteStream';
export type { FetchClient, FetchHandlers } from './generated/build/bazel/remote/asset/v1/Fetch';
export type { PushClient, PushHandlers } from './generated/build/bazel/remote/asset/v1/Push';
export type { OperationsClient, OperationsDefinition, OperationsHandlers } from './generated/google/longrunning/Operations';
export type { Any, Any__Output } from './generated/google/protobuf/Any';

/** Absolute path of the protos/ directory (the include dir). */
export const PROTOS_DIR: string = path.dirname(fileURLToPath(import.meta.url));

/** Entry files; everything they import is loaded too. */
export const PROTO_FILES: readonly string[] = [
  'build/bazel/remote/execution/v2/remote_execution.proto',
  'build/bazel/remote/asset/v1/remote_asset.proto',
  'google/bytestream/bytestream.proto',
  'google/longrunning/operations.proto',
  'google/rpc/status.proto',
  'google/rpc/code.proto',
  'google/rpc/error_details.proto',
  'reapi/v1/reapi.proto',
];

/** The proto-loader options; decode() converts with exactly these. */
export const LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS_DIR],
} satisfies protoLoader.Options;

/** proto-loader package definition of all PROTO_FILES. */
export const packageDefinition: protoLoader.PackageDefinition = protoLoader.loadSync([...PROTO_FILES], LOADER_OPTIONS);

type GrpcTypes = RemoteExecutionGrpc & ByteStreamGrpc & RemoteAssetGrpc;

/** Result of grpc.loadPackageDefinition, typed with the generated types. */
export const grpcObject = grpc.loadPackageDefinition(packageDefinition) as unknown as GrpcTypes;

const v2 = grpcObject.build.bazel.remote.execution.v2;

/**
 * Client constructors; `services.X.service` is the grpc.ServiceDefinition.
 *   server.addService(services.ContentAddressableStorage.service, handlers)
 *   new services.Capabilities('localhost:8980', grpc.credentials.createInsecure())
 */
export const services = {
  Capabilities: v2.Capabilities,
  ContentAddressableStorage: v2.ContentAddressableStorage,
  ActionCache: v2.ActionCache,
  Execution: v2.Execution,
  ByteStream: grpcObject.google.bytestream.ByteStream,
  Operations: grpcObject.google.longrunning.Operations,
  Fetch: grpcObject.build.bazel.remote.asset.v1.Fetch,
  Push: grpcObject.build.bazel.remote.asset.v1.Push,
} as const;

export type ServiceName = keyof typeof services;

/** The grpc.ServiceDefinitions alone, by service name. */
export const serviceDefinitions: { readonly [K in ServiceName]: (typeof services)[K]['service'] } = {
  Capabilities: services.Capabilities.service,
  ContentAddressableStorage: services.ContentAddressableStorage.service,
  ActionCache: services.ActionCache.service,
  Execution: services.Execution.service,
  ByteStream: services.ByteStream.service,
  Operations: services.Operations.service,
  Fetch: services.Fetch.service,
  Push: services.Push.service,
};

// ---------------------------------------------------------------------------
// protobufjs Root

function loadRoot(): protobuf.Root {
  const r = new protobuf.Root();
  const original = r.resolvePath.bind(r);
  // Same resolution as proto-loader: include dirs first, then protobufjs'
  // default (google/protobuf/*.proto come from protobufjs' bundled copies).
  r.resolvePath = (origin: string, target: string): string | null => {
    if (path.isAbsolute(target)) return target;
    for (const dir of LOADER_OPTIONS.includeDirs) {
      const full = path.join(dir, target);
      if (fs.existsSync(full)) return full;
    }
    return original(origin, target);
  };
  r.loadSync([...PROTO_FILES], { keepCase: true });
  r.resolveAll();
  return r;
}

/** protobufjs Root of PROTO_FILES (field names as in the .proto files). */
export const root: protobuf.Root = loadRoot();

// ---------------------------------------------------------------------------
// Typed message map

type IO<T> = T extends MessageTypeDefinition<infer I, infer O> ? { input: I; output: O } : never;
type V2 = RemoteExecutionGrpc['build']['bazel']['remote']['execution']['v2'];
type LR = RemoteExecutionGrpc['google']['longrunning'];
type PB = RemoteExecutionGrpc['google']['protobuf'];
type BS = ByteStreamGrpc['google']['bytestream'];
type ED = ErrorDetailsGrpc['google']['rpc'];
type RA = RemoteAssetGrpc['build']['bazel']['remote']['asset']['v1'];

/** Short message name -> generated input (for encode) / output (from decode) types. */
export interface Messages {
  // build.bazel.remote.execution.v2
  Action: IO<V2['Action']>;
  ActionCacheUpdateCapabilities: IO<V2['ActionCacheUpdateCapabilities']>;
  ActionResult: IO<V2['ActionResult']>;
  BatchReadBlobsRequest: IO<V2['BatchReadBlobsRequest']>;
  BatchReadBlobsResponse: IO<V2['BatchReadBlobsResponse']>;
  BatchUpdateBlobsRequest: IO<V2['BatchUpdateBlobsRequest']>;
  BatchUpdateBlobsResponse: IO<V2['BatchUpdateBlobsResponse']>;
  CacheCapabilities: IO<V2['CacheCapabilities']>;
  Command: IO<V2['Command']>;
  Digest: IO<V2['Digest']>;
  Directory: IO<V2['Directory']>;
  DirectoryNode: IO<V2['DirectoryNode']>;
  ExecuteOperationMetadata: IO<V2['ExecuteOperationMetadata']>;
  ExecuteRequest: IO<V2['ExecuteRequest']>;
  ExecuteResponse: IO<V2['ExecuteResponse']>;
  ExecutedActionMetadata: IO<V2['ExecutedActionMetadata']>;
  ExecutionCapabilities: IO<V2['ExecutionCapabilities']>;
  ExecutionPolicy: IO<V2['ExecutionPolicy']>;
  FastCdc2020Params: IO<V2['FastCdc2020Params']>;
  FileNode: IO<V2['FileNode']>;
  FindMissingBlobsRequest: IO<V2['FindMissingBlobsRequest']>;
  FindMissingBlobsResponse: IO<V2['FindMissingBlobsResponse']>;
  GetActionResultRequest: IO<V2['GetActionResultRequest']>;
  GetCapabilitiesRequest: IO<V2['GetCapabilitiesRequest']>;
  GetTreeRequest: IO<V2['GetTreeRequest']>;
  GetTreeResponse: IO<V2['GetTreeResponse']>;
  LogFile: IO<V2['LogFile']>;
  NodeProperties: IO<V2['NodeProperties']>;
  NodeProperty: IO<V2['NodeProperty']>;
  OutputDirectory: IO<V2['OutputDirectory']>;
  OutputFile: IO<V2['OutputFile']>;
  OutputSymlink: IO<V2['OutputSymlink']>;
  Platform: IO<V2['Platform']>;
  PriorityCapabilities: IO<V2['PriorityCapabilities']>;
  RepMaxCdcParams: IO<V2['RepMaxCdcParams']>;
  RequestMetadata: IO<V2['RequestMetadata']>;
  ResultsCachePolicy: IO<V2['ResultsCachePolicy']>;
  ServerCapabilities: IO<V2['ServerCapabilities']>;
  SpliceBlobRequest: IO<V2['SpliceBlobRequest']>;
  SpliceBlobResponse: IO<V2['SpliceBlobResponse']>;
  SplitBlobRequest: IO<V2['SplitBlobRequest']>;
  SplitBlobResponse: IO<V2['SplitBlobResponse']>;
  SymlinkNode: IO<V2['SymlinkNode']>;
  ToolDetails: IO<V2['ToolDetails']>;
  Tree: IO<V2['Tree']>;
  UpdateActionResultRequest: IO<V2['UpdateActionResultRequest']>;
  WaitExecutionRequest: IO<V2['WaitExecutionRequest']>;
  // build.bazel.remote.asset.v1
  Qualifier: IO<RA['Qualifier']>;
  FetchBlobRequest: IO<RA['FetchBlobRequest']>;
  FetchBlobResponse: IO<RA['FetchBlobResponse']>;
  FetchDirectoryRequest: IO<RA['FetchDirectoryRequest']>;
  FetchDirectoryResponse: IO<RA['FetchDirectoryResponse']>;
  PushBlobRequest: IO<RA['PushBlobRequest']>;
  PushDirectoryRequest: IO<RA['PushDirectoryRequest']>;
  // build.bazel.semver
  SemVer: IO<RemoteExecutionGrpc['build']['bazel']['semver']['SemVer']>;
  // google.longrunning
  Operation: IO<LR['Operation']>;
  GetOperationRequest: IO<LR['GetOperationRequest']>;
  ListOperationsRequest: IO<LR['ListOperationsRequest']>;
  ListOperationsResponse: IO<LR['ListOperationsResponse']>;
  CancelOperationRequest: IO<LR['CancelOperationRequest']>;
  DeleteOperationRequest: IO<LR['DeleteOperationRequest']>;
  WaitOperationRequest: IO<LR['WaitOperationRequest']>;
  // google.rpc
  Status: IO<RemoteExecutionGrpc['google']['rpc']['Status']>;
  PreconditionFailure: IO<ED['PreconditionFailure']>;
  BadRequest: IO<ED['BadRequest']>;
  ErrorInfo: IO<ED['ErrorInfo']>;
  // reapi.v1 (our own)
  ResourceUsage: IO<ReapiGrpc['reapi']['v1']['ResourceUsage']>;
  Provenance: IO<ReapiGrpc['reapi']['v1']['Provenance']>;
  // google.bytestream
  ReadRequest: IO<BS['ReadRequest']>;
  ReadResponse: IO<BS['ReadResponse']>;
  WriteRequest: IO<BS['WriteRequest']>;
  WriteResponse: IO<BS['WriteResponse']>;
  QueryWriteStatusRequest: IO<BS['QueryWriteStatusRequest']>;
  QueryWriteStatusResponse: IO<BS['QueryWriteStatusResponse']>;
  // google.protobuf
  Any: IO<PB['Any']>;
  Duration: IO<PB['Duration']>;
  Timestamp: IO<PB['Timestamp']>;
  Empty: IO<PB['Empty']>;
}

export type MessageName = keyof Messages;
export type MessageInput<K extends MessageName> = Messages[K]['input'];
export type MessageOutput<K extends MessageName> = Messages[K]['output'];

const V2_PKG = 'build.bazel.remote.execution.v2';

/** Short name -> fully qualified protobuf name. */
export const MESSAGE_TYPES = {
  Action: `${V2_PKG}.Action`,
  ActionCacheUpdateCapabilities: `${V2_PKG}.ActionCacheUpdateCapabilities`,
  ActionResult: `${V2_PKG}.ActionResult`,
  BatchReadBlobsRequest: `${V2_PKG}.BatchReadBlobsRequest`,
  BatchReadBlobsResponse: `${V2_PKG}.BatchReadBlobsResponse`,
  BatchUpdateBlobsRequest: `${V2_PKG}.BatchUpdateBlobsRequest`,
  BatchUpdateBlobsResponse: `${V2_PKG}.BatchUpdateBlobsResponse`,
  CacheCapabilities: `${V2_PKG}.CacheCapabilities`,
  Command: `${V2_PKG}.Command`,
  Digest: `${V2_PKG}.Digest`,
  Directory: `${V2_PKG}.Directory`,
  DirectoryNode: `${V2_PKG}.DirectoryNode`,
  ExecuteOperationMetadata: `${V2_PKG}.ExecuteOperationMetadata`,
  ExecuteRequest: `${V2_PKG}.ExecuteRequest`,
  ExecuteResponse: `${V2_PKG}.ExecuteResponse`,
  ExecutedActionMetadata: `${V2_PKG}.ExecutedActionMetadata`,
  ExecutionCapabilities: `${V2_PKG}.ExecutionCapabilities`,
  ExecutionPolicy: `${V2_PKG}.ExecutionPolicy`,
  FastCdc2020Params: `${V2_PKG}.FastCdc2020Params`,
  FileNode: `${V2_PKG}.FileNode`,
  FindMissingBlobsRequest: `${V2_PKG}.FindMissingBlobsRequest`,
  FindMissingBlobsResponse: `${V2_PKG}.FindMissingBlobsResponse`,
  GetActionResultRequest: `${V2_PKG}.GetActionResultRequest`,
  GetCapabilitiesRequest: `${V2_PKG}.GetCapabilitiesRequest`,
  GetTreeRequest: `${V2_PKG}.GetTreeRequest`,
  GetTreeResponse: `${V2_PKG}.GetTreeResponse`,
  LogFile: `${V2_PKG}.LogFile`,
  NodeProperties: `${V2_PKG}.NodeProperties`,
  NodeProperty: `${V2_PKG}.NodeProperty`,
  OutputDirectory: `${V2_PKG}.OutputDirectory`,
  OutputFile: `${V2_PKG}.OutputFile`,
  OutputSymlink: `${V2_PKG}.OutputSymlink`,
  Platform: `${V2_PKG}.Platform`,
  PriorityCapabilities: `${V2_PKG}.PriorityCapabilities`,
  RepMaxCdcParams: `${V2_PKG}.RepMaxCdcParams`,
  RequestMetadata: `${V2_PKG}.RequestMetadata`,
  ResultsCachePolicy: `${V2_PKG}.ResultsCachePolicy`,
  ServerCapabilities: `${V2_PKG}.ServerCapabilities`,
  SpliceBlobRequest: `${V2_PKG}.SpliceBlobRequest`,
  SpliceBlobResponse: `${V2_PKG}.SpliceBlobResponse`,
  SplitBlobRequest: `${V2_PKG}.SplitBlobRequest`,
  SplitBlobResponse: `${V2_PKG}.SplitBlobResponse`,
  SymlinkNode: `${V2_PKG}.SymlinkNode`,
  ToolDetails: `${V2_PKG}.ToolDetails`,
  Tree: `${V2_PKG}.Tree`,
  UpdateActionResultRequest: `${V2_PKG}.UpdateActionResultRequest`,
  WaitExecutionRequest: `${V2_PKG}.WaitExecutionRequest`,
  SemVer: 'build.bazel.semver.SemVer',
  Operation: 'google.longrunning.Operation',
  GetOperationRequest: 'google.longrunning.GetOperationRequest',
  ListOperationsRequest: 'google.longrunning.ListOperationsRequest',
  ListOperationsResponse: 'google.longrunning.ListOperationsResponse',
  CancelOperationRequest: 'google.longrunning.CancelOperationRequest',
  DeleteOperationRequest: 'google.longrunning.DeleteOperationRequest',
  WaitOperationRequest: 'google.longrunning.WaitOperationRequest',
  Status: 'google.rpc.Status',
  PreconditionFailure: 'google.rpc.PreconditionFailure',
  BadRequest: 'google.rpc.BadRequest',
  ErrorInfo: 'google.rpc.ErrorInfo',
  ResourceUsage: 'reapi.v1.ResourceUsage',
  Provenance: 'reapi.v1.Provenance',
  ReadRequest: 'google.bytestream.ReadRequest',
  ReadResponse: 'google.bytestream.ReadResponse',
  WriteRequest: 'google.bytestream.WriteRequest',
  WriteResponse: 'google.bytestream.WriteResponse',
  QueryWriteStatusRequest: 'google.bytestream.QueryWriteStatusRequest',
  QueryWriteStatusResponse: 'google.bytestream.QueryWriteStatusResponse',
  Qualifier: 'build.bazel.remote.asset.v1.Qualifier',
  FetchBlobRequest: 'build.bazel.remote.asset.v1.FetchBlobRequest',
  FetchBlobResponse: 'build.bazel.remote.asset.v1.FetchBlobResponse',
  FetchDirectoryRequest: 'build.bazel.remote.asset.v1.FetchDirectoryRequest',
  FetchDirectoryResponse: 'build.bazel.remote.asset.v1.FetchDirectoryResponse',
  PushBlobRequest: 'build.bazel.remote.asset.v1.PushBlobRequest',
  PushDirectoryRequest: 'build.bazel.remote.asset.v1.PushDirectoryRequest',
  Any: 'google.protobuf.Any',
  Duration: 'google.protobuf.Duration',
  Timestamp: 'google.protobuf.Timestamp',
  Empty: 'google.protobuf.Empty',
} as const satisfies { readonly [K in MessageName]: string };

const SHORT_NAMES: ReadonlyMap<string, MessageName> = new Map(
  (Object.keys(MESSAGE_TYPES) as MessageName[]).map((k) => [MESSAGE_TYPES[k], k] as const),
);

const typeCache = new Map<string, protobuf.Type>();

/** The protobufjs Type of a message, by short name (or fully qualified name). */
export function messageType(typeName: MessageName | string): protobuf.Type {
  const fullName = (MESSAGE_TYPES as Record<string, string>)[typeName] ?? typeName;
  let t = typeCache.get(fullName);
  if (!t) {
    t = root.lookupType(fullName);
    typeCache.set(fullName, t);
  }
  return t;
}

// ---------------------------------------------------------------------------
// Canonical encoding

type PlainObject = Record<string, unknown>;

const INT64_TYPES = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);

function asObject(value: unknown, where: string): PlainObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(`${where}: object expected`);
  }
  return value as PlainObject;
}

function isLongLike(v: unknown): v is { low: number; high: number } {
  return typeof v === 'object' && v !== null && typeof (v as { low?: unknown }).low === 'number' &&
    typeof (v as { high?: unknown }).high === 'number';
}

/** True if `value` is the proto3 default of the (singular, non-message) field. */
function isDefaultValue(field: protobuf.Field, value: unknown): boolean {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Enum) {
    return typeof value === 'string' ? rt.values[value] === 0 : value === 0;
  }
  const t = field.type;
  if (t === 'bool') return value === false;
  if (t === 'string') return value === '';
  if (t === 'bytes') {
    if (typeof value === 'string' || value instanceof Uint8Array || Array.isArray(value)) return value.length === 0;
    return false;
  }
  if (t === 'double' || t === 'float') return typeof value === 'number' && Object.is(value, 0); // -0 is not default
  if (INT64_TYPES.has(t)) {
    if (typeof value === 'number') return value === 0;
    if (typeof value === 'bigint') return value === 0n;
    if (typeof value === 'string') return /^[+-]?0+$/.test(value);
    if (isLongLike(value)) return value.low === 0 && value.high === 0;
    return false;
  }
  // 32-bit integer types
  if (typeof value === 'number') return value === 0;
  if (typeof value === 'string') return /^[+-]?0+$/.test(value);
  return false;
}

/** Converts the proto-loader '@type' Any form into {type_url, value}. */
function anyExtensionToAny(obj: PlainObject): PlainObject {
  const url = String(obj['@type']);
  const fullName = url.slice(url.lastIndexOf('/') + 1);
  const { '@type': _ignored, ...fields } = obj;
  const type = messageType(fullName);
  return {
    type_url: url.includes('/') ? url : TYPE_URL_PREFIX + url,
    value: encodeWithType(type, fields),
  };
}

/**
 * Rebuilds `obj` without proto3 implicit-presence fields that hold their
 * default value and without empty repeated/map fields, recursively. Message
 * fields, oneof members and proto3 `optional` fields keep presence. If several
 * members of one oneof are set, the one named by the virtual oneof property
 * (proto-loader's `oneofs: true` output) wins, else the highest-numbered one.
 */
function canonicalize(type: protobuf.Type, input: PlainObject): PlainObject {
  const obj = type.fullName === '.google.protobuf.Any' && typeof input['@type'] === 'string'
    ? anyExtensionToAny(input)
    : input;
  const chosen = new Map<string, string>();
  for (const oneof of type.oneofsArray) {
    const set = oneof.fieldsArray.filter((f) => obj[f.name] !== undefined && obj[f.name] !== null);
    if (set.length < 2) continue;
    const disc = obj[oneof.name];
    const named = set.find((f) => f.name === disc);
    const last = set.reduce((a, b) => (b.id > a.id ? b : a));
    chosen.set(oneof.name, (named ?? last).name);
  }
  const out: PlainObject = {};
  for (const field of type.fieldsArray) {
    const value = obj[field.name];
    if (value === undefined || value === null) continue;
    if (field.partOf && chosen.has(field.partOf.name) && chosen.get(field.partOf.name) !== field.name) continue;
    const where = `${type.fullName.slice(1)}.${field.name}`;
    const rt = field.resolvedType;
    if (field.map) {
      const entries = Object.entries(asObject(value, where));
      if (entries.length === 0) continue;
      entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      out[field.name] = Object.fromEntries(
        entries.map(([k, v]) => [k, rt instanceof protobuf.Type ? canonicalize(rt, asObject(v ?? {}, where)) : v]),
      );
      continue;
    }
    if (field.repeated) {
      if (!Array.isArray(value)) throw new TypeError(`${where}: array expected`);
      if (value.length === 0) continue;
      out[field.name] = rt instanceof protobuf.Type
        ? value.map((v: unknown) => canonicalize(rt, asObject(v, where)))
        : value.slice();
      continue;
    }
    if (rt instanceof protobuf.Type) {
      out[field.name] = canonicalize(rt, asObject(value, where));
      continue;
    }
    if (!field.hasPresence && isDefaultValue(field, value)) continue;
    out[field.name] = value;
  }
  return out;
}

function toBuffer(u8: Uint8Array): Buffer {
  return Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

function encodeWithType(type: protobuf.Type, obj: PlainObject): Buffer {
  const message = type.fromObject(canonicalize(type, obj));
  return toBuffer(type.encode(message).finish());
}

/**
 * Canonical binary encoding (the bytes to hash for Action, Command,
 * Directory, Tree, ...): fields in number order, proto3 defaults and empty
 * repeated fields omitted at every level. Accepts the same input shapes as
 * proto-loader (enums as names or numbers, int64 as number/string/Long,
 * bytes as Buffer/Uint8Array/base64 string).
 */
export function encode<K extends MessageName>(typeName: K, obj: MessageInput<K>): Buffer {
  return encodeWithType(messageType(typeName), asObject(obj, typeName));
}

/**
 * Decodes bytes into the same object shape gRPC handlers receive
 * (proto-loader options: keepCase, longs Number, enums String, defaults,
 * oneofs; bytes as Buffer).
 */
export function decode<K extends MessageName>(typeName: K, bytes: Uint8Array): MessageOutput<K> {
  const type = messageType(typeName);
  return type.toObject(type.decode(bytes), LOADER_OPTIONS) as MessageOutput<K>;
}

// ---------------------------------------------------------------------------
// google.protobuf.Any

export const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** `type.googleapis.com/<full.name>` of a message. */
export function typeUrl(typeName: MessageName): string {
  return TYPE_URL_PREFIX + MESSAGE_TYPES[typeName];
}

/** Packs a message into an Any (canonically encoded value). */
export function packAny<K extends MessageName>(typeName: K, obj: MessageInput<K>): Any__Output {
  return { type_url: typeUrl(typeName), value: encode(typeName, obj) };
}

/** An unpacked Any, discriminated by `typeName`. */
export type UnpackedAny = { [K in MessageName]: { typeName: K; value: MessageOutput<K> } }[MessageName];

function anyParts(any: Any | Any__Output): { fullName: string; value: Buffer } {
  const obj = any as PlainObject;
  if (typeof obj['@type'] === 'string') {
    const packed = anyExtensionToAny(obj);
    return { fullName: String(obj['@type']).slice(String(obj['@type']).lastIndexOf('/') + 1), value: packed.value as Buffer };
  }
  const url = typeof obj.type_url === 'string' ? obj.type_url : '';
  const raw = obj.value;
  const value = typeof raw === 'string'
    ? Buffer.from(raw, 'base64')
    : raw instanceof Uint8Array
      ? toBuffer(raw)
      : Buffer.alloc(0);
  return { fullName: url.slice(url.lastIndexOf('/') + 1), value };
}

/**
 * Unpacks an Any. With `expected`, checks the type URL and returns that
 * type; without, returns `{typeName, value}` for any type in `Messages`.
 * Throws on a type mismatch or an unknown type.
 */
export function unpackAny<K extends MessageName>(any: Any | Any__Output, expected: K): MessageOutput<K>;
export function unpackAny(any: Any | Any__Output): UnpackedAny;
export function unpackAny(any: Any | Any__Output, expected?: MessageName): unknown {
  const { fullName, value } = anyParts(any);
  if (expected !== undefined) {
    if (fullName !== MESSAGE_TYPES[expected]) {
      throw new TypeError(`unpackAny: expected ${MESSAGE_TYPES[expected]}, got '${fullName}'`);
    }
    return decode(expected, value);
  }
  const typeName = SHORT_NAMES.get(fullName);
  if (typeName === undefined) throw new TypeError(`unpackAny: unknown type '${fullName}'`);
  return { typeName, value: decode(typeName, value) };
}
