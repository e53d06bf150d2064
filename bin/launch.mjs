// Shared by the bin/ entry points: import the compiled dist/<module>.js while it is up to date,
// else <module>.ts through tsx. Up to date: dist/.built is newer than every source file (a walk
// of a few hundred stat calls, about a millisecond).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SOURCE_DIRS = ['cli', 'common', 'protos', 'cas', 'scheduler', 'worker', 'clients', 'execution'];
const SOURCE_FILE = /\.(ts|proto|lua|mjs)$/;

function newerThan(dir, ms) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return false;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'generated' && newerThan(path, ms)) return true;
    } else if (SOURCE_FILE.test(e.name) && statSync(path).mtimeMs > ms) {
      return true;
    }
  }
  return false;
}

export function compiledIsCurrent() {
  let built;
  try {
    built = statSync(join(ROOT, 'dist', '.built')).mtimeMs;
  } catch {
    return false;
  }
  return !SOURCE_DIRS.some((d) => newerThan(join(ROOT, d), built));
}

export async function runCompiledOrSources(module) {
  if (process.env.REAPI_FROM_SOURCES !== '1' && compiledIsCurrent()) return import(join(ROOT, 'dist', `${module}.js`));
  const { register } = await import('tsx/esm/api');
  register();
  return import(join(ROOT, `${module}.ts`));
}
