// The compiled JavaScript (scripts/build.sh -> dist/) that bin/reapi.mjs runs: every module loads
// in plain Node (no tsx: import specifiers and package subpaths must resolve as Node resolves
// them), and the command answers --help. Built into a temp dir, so the checkout's dist/ is untouched.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { REPO } from '../support/guest-build.ts';

let out: string;
before(async () => {
  out = join(await mkdtemp(join(tmpdir(), 'reapi-dist-')), 'dist');
  execFileSync('bash', ['scripts/build.sh', '--out', out], { cwd: REPO, stdio: 'pipe' });
  // Packages resolve from beside the build, as they do for dist/ in the checkout.
  await symlink(join(REPO, 'node_modules'), join(out, 'node_modules'));
});
after(async () => {
  await rm(join(out, '..'), { recursive: true, force: true });
});

test('reapi --help answers from the compiled build', () => {
  const help = execFileSync(process.execPath, [join(out, 'cli', 'main.js'), '--help'], { cwd: REPO, encoding: 'utf8' });
  for (const command of ['serve', 'cas', 'scheduler', 'worker', 'expand', 'expander', 'cargo']) assert.match(help, new RegExp(`^  ${command}\\b`, 'm'));
});

test('every compiled module loads in plain Node', async () => {
  const files = (await readdir(out, { recursive: true }))
    .filter((f) => f.endsWith('.js') && !f.startsWith('node_modules'))
    // Entry points with effects: the command line (parses argv) and the expansion thread (needs a parent).
    .filter((f) => f !== join('cli', 'main.js') && f !== join('execution', 'wasm', 'expand-thread.js'))
    .filter((f) => !f.startsWith(join('protos', 'generated')))
    .map((f) => join(out, f));
  assert.ok(files.length > 50, `${files.length} modules`);
  const script = join(out, 'load-all.mjs');
  await writeFile(script, `for (const f of ${JSON.stringify(files)}) {\n  try { await import(f); } catch (err) { console.error(f + ': ' + err.message); process.exitCode = 1; }\n}\n`);
  try {
    execFileSync(process.execPath, [script], { cwd: out, stdio: 'pipe' });
  } catch (err) {
    assert.fail(`modules that do not load in plain Node:\n${(err as { stderr?: Buffer }).stderr?.toString()}`);
  }
});
