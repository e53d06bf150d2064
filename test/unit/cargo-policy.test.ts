// The build-script policy file: validation that names the offending key, defaults, per-crate
// overrides, and the hints denials print.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { allowHint } from '../../execution/build-script.ts';
import { DEFAULT_READ_ONLY_PATHS, DEFAULT_TOOLS, parsePolicyFile, passedEnv, PolicyError, resolvePolicy, type LoadedPolicy } from '../../clients/cargo/policy.ts';
import { replaceBytes } from '../../worker/runners/build-script-runner.ts';

const loaded = (text: string): LoadedPolicy => ({ file: parsePolicyFile(text, 'reapi-build-policy.json'), path: '/ws/reapi-build-policy.json', label: 'reapi-build-policy.json' });

test('without a file the defaults apply: rustc, the C toolchain, pkg-config; libraries, headers, .pc files', () => {
  const p = resolvePolicy({ file: {}, path: undefined, label: null }, 'libz-sys', '1.1.8');
  assert.deepEqual(p.tools, [...DEFAULT_TOOLS].sort());
  assert.deepEqual(p.readOnlyPaths, [...DEFAULT_READ_ONLY_PATHS].sort());
  assert.equal(p.crate, 'libz-sys v1.1.8');
  assert.equal(p.policyFile, null);
  assert.deepEqual(p.limits, { memoryBytes: 1024 ** 3, processes: 256, timeoutSeconds: 600 });
  assert.match(allowHint(p, 'tools', '["git"]'), /"crates": \{"libz-sys": \{"tools": \["git"\]\}\} in reapi-build-policy\.json in the workspace root \(create it\)/);
});

test('per-crate settings add tools, paths and env to the top level and override limits; other crates are unaffected', () => {
  const policy = loaded(JSON.stringify({
    env: ['CC'],
    limits: { memory: '512MiB' },
    crates: { 'my-codegen': { tools: ['git', 'protoc'], readOnlyPaths: ['/opt/protoc/'], env: ['PROTOC'], limits: { memory: '2GiB', processes: 64 } } },
  }));
  const mine = resolvePolicy(policy, 'my-codegen', '0.1.0');
  assert.deepEqual(mine.tools, ['c-toolchain', 'git', 'pkg-config', 'protoc', 'rustc']);
  assert.ok(mine.readOnlyPaths.includes('/opt/protoc'), 'trailing slash dropped');
  assert.deepEqual(mine.limits, { memoryBytes: 2 * 1024 ** 3, processes: 64, timeoutSeconds: 600 });
  assert.deepEqual(passedEnv(policy, 'my-codegen'), ['CC', 'PROTOC']);
  const other = resolvePolicy(policy, 'serde', '1.0.0');
  assert.deepEqual(other.tools, ['c-toolchain', 'pkg-config', 'rustc']);
  assert.equal(other.limits.memoryBytes, 512 * 1024 ** 2);
  assert.deepEqual(passedEnv(policy, 'serde'), ['CC']);
  assert.equal(other.policyFile, 'reapi-build-policy.json');
});

test('top-level lists replace the defaults', () => {
  const p = resolvePolicy(loaded('{"tools": ["rustc"], "readOnlyPaths": ["/usr/lib"]}'), 'x', '1.0.0');
  assert.deepEqual(p.tools, ['rustc']);
  assert.deepEqual(p.readOnlyPaths, ['/usr/lib']);
});

test('a bad file is refused with the file and the key named', () => {
  assert.throws(() => parsePolicyFile('{"tool": ["git"]}', 'p.json'), (e: unknown) => e instanceof PolicyError && /p\.json: .*tool/.test(e.message));
  assert.throws(() => parsePolicyFile('{"readOnlyPaths": ["etc"]}', 'p.json'), /readOnlyPaths\.0: must be an absolute path/);
  assert.throws(() => parsePolicyFile('{"readOnlyPaths": ["/usr/../etc"]}', 'p.json'), /without "\.\."/);
  assert.throws(() => parsePolicyFile('{"limits": {"memory": "lots"}}', 'p.json'), /limits\.memory: "lots" is not a size/);
  assert.throws(() => parsePolicyFile('{"crates": {"x": {"network": true}}}', 'p.json'), /crates\.x: .*network/);
  assert.throws(() => parsePolicyFile('{"tools": ["/usr/bin/git"]}', 'p.json'), /tools\.0: a tool is a program name/);
  assert.throws(() => parsePolicyFile('not json', 'p.json'), /p\.json: not valid JSON/);
});

test('replaceBytes maps a path in output that need not be UTF-8', () => {
  const out = Buffer.concat([Buffer.from('cargo:rustc-link-search=native=/build-x/exec/out/lib\n'), Buffer.from([0xff, 0xfe]), Buffer.from('/build-x/exec')]);
  const mapped = replaceBytes(out, '/build-x/exec', '/build-script');
  const expected = Buffer.concat([Buffer.from('cargo:rustc-link-search=native=/build-script/out/lib\n'), Buffer.from([0xff, 0xfe]), Buffer.from('/build-script')]);
  assert.deepEqual(mapped, expected);
  assert.equal(replaceBytes(Buffer.from('nothing here'), '/build-x', '/y').toString(), 'nothing here');
});
