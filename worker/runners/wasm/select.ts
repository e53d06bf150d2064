// Routing a job to the WasmRunner: actions whose platform has `runtime=wasm-macro`. Workers
// advertise the property; a job without it never matches on it (platform matching only looks at
// the job's own properties), so such workers still take every ordinary job.
import type { PlatformProperties } from '../../../scheduler/job-queue.ts';
import type { Runner } from '../../runner.ts';

export const RUNTIME_PROPERTY = 'runtime';
export const WASM_MACRO_RUNTIME = 'wasm-macro';

/** The worker's platform plus `runtime: wasm-macro`, unless its configured platform already decides. */
export function withWasmPlatform(platform: PlatformProperties): PlatformProperties {
  return RUNTIME_PROPERTY in platform ? platform : { ...platform, [RUNTIME_PROPERTY]: WASM_MACRO_RUNTIME };
}

/** `select`, except that wasm-macro jobs go to `wasm`. */
export function withWasmRunner(select: (platform: PlatformProperties) => Runner, wasm: Runner): (platform: PlatformProperties) => Runner {
  return (platform) => (platform[RUNTIME_PROPERTY] === WASM_MACRO_RUNTIME ? wasm : select(platform));
}
