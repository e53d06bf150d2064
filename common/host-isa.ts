// The REAPI ISA name of this machine, as workers advertise it (worker.platform ISA) and clients
// pin it in the actions whose results depend on it (build scripts, wasm macros: NaN bit patterns).
import { arch } from 'node:os';

export function hostIsa(): string {
  const a = arch();
  return a === 'x64' ? 'x86-64' : a === 'arm64' ? 'aarch64' : a;
}
