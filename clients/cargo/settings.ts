// Settings every cargo entry point shares: the endpoint and the build-script policy file in force.
// Light on purpose (no gRPC): `reapi cargo` reads them before it starts cargo. TLS and the token
// reach the processes cargo starts through the REAPI_TLS_* and REAPI_TOKEN_FILE variables.
import { basename, resolve } from 'node:path';

import { parseEndpoint } from '../../common/endpoint.ts';
import { findPolicyFile, loadPolicy, type LoadedPolicy } from './policy.ts';

export const DEFAULT_ENDPOINT = 'grpc://127.0.0.1:8980';

/** The endpoint checked: `grpc://HOST:PORT`, `grpcs://HOST:PORT` (TLS) or HOST:PORT. */
export function endpointAddress(endpoint: string): string {
  try {
    parseEndpoint(endpoint);
  } catch {
    throw new Error(`the endpoint must look like grpc://HOST:PORT or grpcs://HOST:PORT, not ${endpoint}`);
  }
  return endpoint.trim();
}

/** The policy file in force: `flag`, REAPI_BUILD_POLICY, or reapi-build-policy.json in `cwd` or above. */
export function policyFor(flag: string | undefined, cwd: string): LoadedPolicy {
  const path = flag ?? (process.env.REAPI_BUILD_POLICY || undefined) ?? findPolicyFile(cwd);
  if (!path) return loadPolicy(undefined);
  // Messages name it by its file name only: the label is part of every action key, so it must be
  // the same on every machine and from every entry point.
  const abs = resolve(cwd, path);
  return loadPolicy(abs, basename(abs));
}
