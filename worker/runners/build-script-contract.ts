// The shape of a Cargo build-script action, shared by the client that builds it
// (clients/cargo/build-script-action.ts) and the worker's BuildScriptRunner that runs it.

/** The platform property that routes build scripts here, and its protocol version. */
export const BUILD_SCRIPT_PROPERTY = 'cargo-build-script';
export const BUILD_SCRIPT_PROTOCOL = '1';
/** The release of the worker's rustc (`rustc -vV`), e.g. 1.63.0: build scripts probe it. */
export const RUSTC_RELEASE_PROPERTY = 'rustc-release';
/** Where the exec root appears inside the sandbox unless the verifier moves it. */
export const CANONICAL_ROOT = '/build-script';
/** Layout of the input root (relative paths). */
export const LAYOUT = { binary: '.reapi/build-script-build', policy: '.reapi/policy.json', deps: '.reapi/dep', src: 'src', out: 'out' } as const;
