// The build-script policy FILE a project keeps (`reapi-build-policy.json` in the workspace root,
// or `--policy FILE` / REAPI_BUILD_POLICY): defaults plus per-crate overrides, validated by zod,
// and resolved per crate into the action policy of execution/build-script.ts.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';

import { parseSize } from '../../common/config.ts';
import { absolutePath, POLICY_FILE_NAME, toolName, type ActionPolicy } from '../../execution/build-script.ts';

export const DEFAULT_TOOLS: readonly string[] = ['rustc', 'c-toolchain', 'pkg-config'];

/**
 * System directories visible read-only by default: libraries (rustc's sysroot, gcc's internals,
 * the system libraries and their .pc files), headers and the shared .pc files.
 */
export const DEFAULT_READ_ONLY_PATHS: readonly string[] = ['/usr/include', '/usr/lib', '/usr/lib64', '/usr/share/pkgconfig'];

/**
 * Host environment variables passed to build scripts besides the ones Cargo sets for them
 * (CARGO_*, OUT_DIR, TARGET, ...): the ones the cc and pkg-config crates read.
 */
export const DEFAULT_ENV: readonly string[] = [
  'AR', 'CC', 'CFLAGS', 'CPPFLAGS', 'CXX', 'CXXFLAGS', 'LDFLAGS', 'RANLIB',
  'PKG_CONFIG', 'PKG_CONFIG_PATH', 'PKG_CONFIG_LIBDIR', 'PKG_CONFIG_SYSROOT_DIR', 'PKG_CONFIG_ALLOW_CROSS',
];

export const DEFAULT_LIMITS = { memoryBytes: 1024 ** 3, processes: 256, timeoutSeconds: 600 } as const;

const memory = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : parseSize(v);
  if (n === undefined || n <= 0) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (e.g. 512MiB, 2GiB)` });
    return z.NEVER;
  }
  return n;
});

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name');

const limitsSchema = z
  .object({
    memory: memory.optional(),
    processes: z.number().int().positive().optional(),
    timeoutSeconds: z.number().positive().optional(),
  })
  .strict();

const settingsShape = {
  /** Tools (program names or groups) build scripts may run. */
  tools: z.array(toolName).optional(),
  /** System directories visible read-only. */
  readOnlyPaths: z.array(absolutePath).optional(),
  /** Host environment variables passed through. */
  env: z.array(envName).optional(),
  limits: limitsSchema.optional(),
};

/** The policy file: top-level settings replace the defaults; `crates.NAME` settings add to them. */
export const policyFileSchema = z
  .object({
    ...settingsShape,
    crates: z.record(z.string().regex(/^[A-Za-z0-9_-]+$/, 'a crate name'), z.object(settingsShape).strict()).optional(),
  })
  .strict();
export type PolicyFile = z.infer<typeof policyFileSchema>;

export class PolicyError extends Error {}

/** Parses and validates a policy file; errors name the file and the offending key. */
export function parsePolicyFile(text: string, file: string): PolicyFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new PolicyError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  const parsed = policyFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`);
    throw new PolicyError(`${file}: ${issues.join('; ')}`);
  }
  return parsed.data;
}

/** `reapi-build-policy.json` in `dir` or the nearest ancestor holding one. */
export function findPolicyFile(dir: string): string | undefined {
  let d = resolve(dir);
  for (;;) {
    const candidate = join(d, POLICY_FILE_NAME);
    try {
      readFileSync(candidate);
      return candidate;
    } catch {
      // Not here.
    }
    const parent = dirname(d);
    if (parent === d) return undefined;
    d = parent;
  }
}

export interface LoadedPolicy {
  file: PolicyFile;
  /** Path of the file, or undefined when the defaults apply. */
  path: string | undefined;
  /** How messages name it. */
  label: string | null;
}

/** Loads the policy file at `path` (undefined: the defaults). */
export function loadPolicy(path: string | undefined, label?: string): LoadedPolicy {
  if (!path) return { file: {}, path: undefined, label: null };
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new PolicyError(`cannot read the build-script policy ${path}: ${(e as Error).message}`);
  }
  return { file: parsePolicyFile(text, path), path, label: label ?? path };
}

const union = (a: readonly string[], b: readonly string[] | undefined): string[] => [...new Set([...a, ...(b ?? [])])].sort();

/** The policy in force for one crate's build script. */
export function resolvePolicy(policy: LoadedPolicy, crateName: string, version: string): ActionPolicy {
  const f = policy.file;
  const own = f.crates?.[crateName];
  const limits = { ...f.limits, ...own?.limits };
  return {
    version: 1,
    crate: `${crateName} v${version}`,
    crateName,
    policyFile: policy.label,
    tools: union(f.tools ?? DEFAULT_TOOLS, own?.tools),
    readOnlyPaths: union(f.readOnlyPaths ?? DEFAULT_READ_ONLY_PATHS, own?.readOnlyPaths),
    limits: {
      memoryBytes: limits.memory ?? DEFAULT_LIMITS.memoryBytes,
      processes: limits.processes ?? DEFAULT_LIMITS.processes,
      timeoutSeconds: limits.timeoutSeconds ?? DEFAULT_LIMITS.timeoutSeconds,
    },
  };
}

/** Host environment variable names passed through for this crate. */
export function passedEnv(policy: LoadedPolicy, crateName: string): string[] {
  return union(policy.file.env ?? DEFAULT_ENV, policy.file.crates?.[crateName]?.env);
}
