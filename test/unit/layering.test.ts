// The folders' layering, checked on every relative import of the source tree: `scheduler/`,
// `worker/` and `clients/` sit side by side on `execution/` (the contracts they share) and never
// import each other; only `cli/` composes them.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Folder -> the folders its files may import (besides itself). */
const ALLOWED: Record<string, readonly string[]> = {
  protos: [],
  common: ['protos'],
  cas: ['common', 'protos'],
  execution: ['cas', 'common', 'protos'],
  scheduler: ['execution', 'cas', 'common', 'protos'],
  worker: ['execution', 'cas', 'common', 'protos'],
  clients: ['execution', 'common', 'protos'],
  cli: ['scheduler', 'worker', 'clients', 'execution', 'cas', 'common', 'protos'],
};

/** Every relative module a file names: static and dynamic imports, re-exports, worker-thread URLs. */
function importsOf(text: string): string[] {
  const specs: string[] = [];
  const patterns = [/\bfrom\s+['"](\.{1,2}\/[^'"]+)['"]/g, /\bimport\s*\(\s*['"](\.{1,2}\/[^'"]+)['"]/g, /\bnew URL\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*,\s*import\.meta\.url/g];
  for (const re of patterns) for (const m of text.matchAll(re)) specs.push(m[1]!);
  return specs;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      if (name !== 'generated') out.push(...sourceFiles(path));
    } else if (/\.(ts|mjs|js)$/.test(name)) out.push(path);
  }
  return out;
}

/** The import edges that break the table, as "file imports target". */
export function layeringViolations(root: string, allowed: Record<string, readonly string[]>): string[] {
  const violations: string[] = [];
  for (const folder of Object.keys(allowed)) {
    for (const file of sourceFiles(join(root, folder))) {
      for (const spec of importsOf(readFileSync(file, 'utf8'))) {
        const target = relative(root, resolve(dirname(file), spec)).split('/')[0]!;
        if (target === folder) continue;
        if (!(target in allowed)) violations.push(`${relative(root, file)} imports ${spec}: ${target}/ is not a source folder of the table`);
        else if (!allowed[folder]!.includes(target)) violations.push(`${relative(root, file)} imports ${spec}: ${folder}/ may not import ${target}/`);
      }
    }
  }
  return violations;
}

test('no source file imports against the layering table', () => {
  assert.deepEqual(layeringViolations(ROOT, ALLOWED), []);
});

test('the check sees a forbidden import (scheduler -> worker) and an allowed one', () => {
  const table = { ...ALLOWED, scheduler: ALLOWED.scheduler!.filter((f) => f !== 'execution') };
  const found = layeringViolations(ROOT, table);
  assert.ok(found.length > 0, 'a scheduler file imports execution/, so forbidding it must show up');
  assert.ok(found.every((v) => v.startsWith('scheduler/') && v.includes('may not import execution/')), found.join('\n'));
});

test('importsOf finds static, dynamic and worker-thread imports', () => {
  const text = `import { a } from '../worker/a.ts';\nexport { b } from './b.ts';\nawait import('../clients/c.ts');\nnew Worker(new URL('./thread.ts', import.meta.url));\nimport x from 'node:fs';`;
  assert.deepEqual(importsOf(text).sort(), ['../clients/c.ts', '../worker/a.ts', './b.ts', './thread.ts']);
});
