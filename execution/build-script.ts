// The shape of a Cargo build-script action, shared by the client that builds it
// (clients/cargo/build-script-action.ts) and the worker's BuildScriptRunner that runs it: its
// platform, its input layout, and the ACTION policy: which tools it may run, which system
// directories it sees (read-only) and its limits. The client resolves the project's policy file
// (clients/cargo/policy.ts) into it and writes it into the Action as `.reapi/policy.json`, so it
// is part of the action key; the worker enforces it.
//
// Network access is never allowed; writes go only to OUT_DIR and temp. Neither is configurable.
import { z } from 'zod';

/** The platform property that routes build scripts here, and its protocol version. */
export const BUILD_SCRIPT_PROPERTY = 'cargo-build-script';
export const BUILD_SCRIPT_PROTOCOL = '1';
/** The release of the worker's rustc (`rustc -vV`), e.g. 1.63.0: build scripts probe it. */
export const RUSTC_RELEASE_PROPERTY = 'rustc-release';
/** Where the exec root appears inside the sandbox unless the verifier moves it. */
export const CANONICAL_ROOT = '/build-script';
/** Layout of the input root (relative paths). */
export const LAYOUT = { binary: '.reapi/build-script-build', policy: '.reapi/policy.json', deps: '.reapi/dep', src: 'src', out: 'out' } as const;

/** Name of the policy file looked up in the working directory and its ancestors. */
export const POLICY_FILE_NAME = 'reapi-build-policy.json';

/** Tool group names and what they stand for (expanded on the worker, against its /usr/bin). */
export const TOOL_GROUPS: Record<string, { describe: string; names: string[]; pattern?: RegExp }> = {
  rustc: { describe: 'rustc and rustdoc', names: ['rustc', 'rustdoc'] },
  'c-toolchain': {
    describe: 'the C/C++ compiler, assembler, linker and binutils',
    names: ['cc', 'c++', 'gcc', 'g++', 'cpp', 'as', 'ld', 'ld.bfd', 'ld.gold', 'ar', 'ranlib', 'nm', 'objcopy', 'objdump', 'strip', 'readelf'],
    // Versioned and target-prefixed names, e.g. gcc-12, x86_64-linux-gnu-gcc-12, x86_64-linux-gnu-ar.
    pattern: /^(?:[a-z0-9_]+-linux-gnu-)?(?:gcc|g\+\+|cpp|cc|c\+\+|as|ld|ld\.bfd|ld\.gold|ar|ranlib|nm|objcopy|objdump|strip|readelf)(?:-\d+)?$/,
  },
  'pkg-config': { describe: 'pkg-config (pkgconf)', names: ['pkg-config', 'pkgconf'], pattern: /^(?:[a-z0-9_]+-linux-gnu-)?pkg-?config$/ },
};

export const toolName = z.string().regex(/^[A-Za-z0-9._+-]+$/, 'a tool is a program name such as "git" or a group: rustc, c-toolchain, pkg-config');
export const absolutePath = z
  .string()
  .refine((p) => p.startsWith('/') && !p.split('/').includes('..'), 'must be an absolute path without ".."')
  .transform((p) => (p.length > 1 ? p.replace(/\/+$/, '') : p));
/** The policy of one build script, as carried inside its Action (`.reapi/policy.json`). */
export const actionPolicySchema = z
  .object({
    version: z.literal(1),
    /** "name vVERSION" of the package whose build script this is (as Cargo names it). */
    crate: z.string(),
    /** The crate name as the policy file's `crates` keys spell it. */
    crateName: z.string(),
    /** The policy file as the user named it (for messages), or null when the defaults apply. */
    policyFile: z.string().nullable(),
    tools: z.array(toolName),
    readOnlyPaths: z.array(absolutePath),
    limits: z.object({ memoryBytes: z.number().int().positive(), processes: z.number().int().positive(), timeoutSeconds: z.number().positive() }).strict(),
  })
  .strict();
export type ActionPolicy = z.infer<typeof actionPolicySchema>;

/** How a denial tells the user to allow something: the setting and where it goes. */
export function allowHint(policy: Pick<ActionPolicy, 'crateName' | 'policyFile'>, key: 'tools' | 'readOnlyPaths' | 'limits', value: string): string {
  const where = policy.policyFile ?? `${POLICY_FILE_NAME} in the workspace root (create it)`;
  return `allow it with "crates": {"${policy.crateName}": {"${key}": ${value}}} in ${where}`;
}
