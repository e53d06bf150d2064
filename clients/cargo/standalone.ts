// One build script on the fleet from a process of its own: what `reapi build-script-runner BINARY`
// and bin/reapi-build-script (without `reapi cargo` around it) do.
import { resolve } from 'node:path';

import { connectExec } from '../remote-execution.ts';
import { newInvocationId, runBuildScript } from './build-script-action.ts';
import { findPolicyFile } from './policy.ts';
import { DEFAULT_ENDPOINT, endpointAddress, policyFor } from './settings.ts';

export interface StandaloneFlags {
  endpoint?: string;
  instance?: string;
  policy?: string;
}

/** Runs the build script `binary` on the fleet with this process's environment; replays its output; returns its exit code. */
export async function runStandalone(binary: string, args: string[], flags: StandaloneFlags = {}): Promise<number> {
  const endpoint = flags.endpoint ?? process.env.REAPI_ENDPOINT ?? DEFAULT_ENDPOINT;
  const clients = connectExec(endpointAddress(endpoint), flags.instance ?? process.env.REAPI_INSTANCE ?? '');
  // Found from OUT_DIR (inside the workspace's target directory, usually) or the package.
  const from = [process.env.OUT_DIR, process.env.CARGO_MANIFEST_DIR, process.cwd()].find((d) => d && findPolicyFile(d)) ?? process.cwd();
  const policy = policyFor(flags.policy, from);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  try {
    const result = await runBuildScript(
      { clients, endpoint, policy, invocationId: process.env.REAPI_INVOCATION_ID ?? newInvocationId() },
      { binary: resolve(binary), args, cwd: process.cwd(), env },
    );
    await new Promise<void>((r) => process.stdout.write(result.stdout, () => r()));
    await new Promise<void>((r) => process.stderr.write(result.stderr, () => r()));
    return result.exitCode;
  } finally {
    clients.close();
  }
}

/** Entry of bin/reapi-build-script.mjs: `BINARY [ARGS...]`. */
export async function main(argv: string[]): Promise<void> {
  const [binary, ...args] = argv;
  if (!binary) {
    process.stderr.write('usage: reapi-build-script BINARY [ARGS...] (with the environment Cargo gives a build script)\n');
    process.exit(2);
  }
  try {
    process.exit(await runStandalone(binary, args));
  } catch (e) {
    process.stderr.write(`reapi: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
