// Who may do what. Every gRPC method and HTTP route needs one permission (Capabilities only an
// identity); a principal may be limited to instance names starting with given prefixes.
import { z } from 'zod';

export const PERMISSIONS = ['cache-read', 'cache-write', 'execute', 'reports-read', 'admin', 'worker'] as const;
/**
 * - cache-read: FindMissingBlobs, BatchReadBlobs, GetTree, ByteStream.Read, GetActionResult;
 * - cache-write: BatchUpdateBlobs, ByteStream.Write, QueryWriteStatus, UpdateActionResult (subject
 *   to the ActionCache's write policy);
 * - cache-write also: Fetch (the server downloads into the CAS for the caller);
 * - execute: Execute, WaitExecution, Operations;
 * - reports-read: /api/reports;
 * - admin: everything, and alone Push (it says what a URL holds for every later Fetch);
 * - worker: a worker or scheduler of the fleet: its ActionCache writes are a worker's (they keep
 *   their provenance and pass the write policy), and it reads entries as stored.
 */
export type Permission = (typeof PERMISSIONS)[number];
export const permissionSchema = z.enum(PERMISSIONS);

export interface Principal {
  name: string;
  /** How it was identified. */
  via: 'mtls' | 'token' | 'jwt' | 'fleet-token' | 'local-user' | 'anonymous';
  permissions: ReadonlySet<Permission>;
  /** Instance-name prefixes it is limited to; undefined: every instance. */
  instances?: readonly string[];
}

/** The permission each gRPC method needs (undefined: an identity is enough). */
export const METHOD_PERMISSIONS: Record<string, Permission | undefined> = {
  'Capabilities.GetCapabilities': undefined,
  'ContentAddressableStorage.FindMissingBlobs': 'cache-read',
  'ContentAddressableStorage.BatchReadBlobs': 'cache-read',
  'ContentAddressableStorage.GetTree': 'cache-read',
  'ContentAddressableStorage.BatchUpdateBlobs': 'cache-write',
  'ByteStream.Read': 'cache-read',
  'ByteStream.Write': 'cache-write',
  'ByteStream.QueryWriteStatus': 'cache-write',
  'ActionCache.GetActionResult': 'cache-read',
  'ActionCache.UpdateActionResult': 'cache-write',
  'Execution.Execute': 'execute',
  'Execution.WaitExecution': 'execute',
  'Operations.GetOperation': 'execute',
  'Operations.ListOperations': 'execute',
  'Operations.CancelOperation': 'execute',
  'Operations.DeleteOperation': 'execute',
  'Operations.WaitOperation': 'execute',
  // The server fetches and stores content on the caller's behalf.
  'Fetch.FetchBlob': 'cache-write',
  'Fetch.FetchDirectory': 'cache-write',
  // Pushing says what a URL holds for everyone who fetches it: trusted callers only.
  'Push.PushBlob': 'admin',
  'Push.PushDirectory': 'admin',
};

export function may(p: Principal, permission: Permission): boolean {
  return p.permissions.has(permission) || p.permissions.has('admin');
}

export function mayUseInstance(p: Principal, instance: string): boolean {
  return p.instances === undefined || p.instances.some((prefix) => instance.startsWith(prefix));
}

/** The instance name a request names: `instance_name`, or the part of a ByteStream resource name before its kind. */
export function instanceOfRequest(request: unknown): string | undefined {
  const r = request as { instance_name?: unknown; resource_name?: unknown } | null | undefined;
  if (typeof r?.instance_name === 'string') return r.instance_name;
  if (typeof r?.resource_name === 'string') {
    const m = /^(?:(.*?)\/)?(?:uploads\/[^/]+\/)?(?:blobs|compressed-blobs)\//.exec(r.resource_name);
    return m ? (m[1] ?? '') : undefined;
  }
  return undefined;
}
