// Real Bazel (4.2.3) with --experimental_remote_downloader and --remote_download_minimal against
// `reapi serve`: an http_archive of the workspace is fetched by the server through the Remote
// Asset API (from a local HTTP server), the workspace builds remotely without downloading
// intermediate outputs, and a clean rebuild is all cache hits, the archive fetched only once.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { allRemoteCacheHits, bazelAvailable, createBazel, DEFAULT_WORKSPACE, parseProcessSummary, type Bazel } from './bazel.ts';
import { httpGet, metricValue, startReapi, type ReapiProcess } from '../support/reapi-process.ts';

const isRoot = process.getuid?.() === 0;

describe('Bazel with --experimental_remote_downloader and --remote_download_minimal', { skip: (!bazelAvailable() && 'bazel is not installed') || (!isRoot && 'the bwrap sandbox needs root') }, () => {
  let dir: string;
  let server: ReapiProcess;
  let bazel: Bazel;
  let origin: http.Server;
  const requests: Array<{ path: string; agent: string }> = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reapi-e2e-downloader-'));
    // The archive an http_archive names: a small library of data files.
    const src = join(dir, 'src', 'greeting-1.0');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'hello.txt'), 'hello from an http_archive\n');
    execFileSync('tar', ['-czf', join(dir, 'greeting-1.0.tar.gz'), '-C', join(dir, 'src'), 'greeting-1.0']);
    const archive = await readFile(join(dir, 'greeting-1.0.tar.gz'));
    origin = http.createServer((req, res) => {
      requests.push({ path: req.url ?? '', agent: String(req.headers['user-agent'] ?? '') });
      if (req.url !== '/greeting-1.0.tar.gz') return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': archive.length }).end(archive);
    });
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    const port = (origin.address() as AddressInfo).port;

    const config = join(dir, 'reapi.json');
    // The origin is on loopback, which the server refuses to fetch from unless told.
    await writeFile(config, JSON.stringify({ assets: { allowPrivateNetworks: true } }));
    server = await startReapi(['serve', '--data-dir', join(dir, 'data'), '--config', config]);

    bazel = await createBazel({ workspace: DEFAULT_WORKSPACE });
    const sha256 = createHash('sha256').update(archive).digest('hex');
    await appendFile(
      join(bazel.workspace, 'WORKSPACE'),
      `
load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")
http_archive(
    name = "greeting",
    urls = ["http://127.0.0.1:${port}/greeting-1.0.tar.gz"],
    sha256 = "${sha256}",
    strip_prefix = "greeting-1.0",
    build_file_content = 'exports_files(["hello.txt"])',
)
`,
    );
    await mkdir(join(bazel.workspace, 'downloaded'));
    await writeFile(
      join(bazel.workspace, 'downloaded', 'BUILD'),
      `genrule(
    name = "shout",
    srcs = ["@greeting//:hello.txt"],
    outs = ["shout.txt"],
    cmd = "tr a-z A-Z < $< > $@",
)
`,
    );
  });

  after(async () => {
    await bazel?.dispose();
    await server?.stop();
    await new Promise<void>((r) => (origin ? origin.close(() => r()) : r()));
    await rm(dir, { recursive: true, force: true });
  });

  const flags = () => [
    ...bazel.remoteFlags(server.endpoint, 'executor'),
    `--experimental_remote_downloader=${server.endpoint.startsWith('grpc') ? server.endpoint : `grpc://${server.endpoint}`}`,
    '--remote_download_minimal',
    // No local repository cache: every fetch of the archive asks the server.
    '--repository_cache=',
  ];

  test('the archive is fetched by the server and the workspace builds remotely', async () => {
    const r = await bazel.run(['build', '//...', ...flags()]);
    assert.equal(r.code, 0, `bazel build failed:\n${r.stderr.slice(-4000)}`);
    const fetched = requests.filter((q) => q.path === '/greeting-1.0.tar.gz');
    assert.equal(fetched.length, 1, JSON.stringify(requests));
    assert.equal(fetched[0]!.agent, 'reapi-remote-asset', 'the download came from the server, not from Bazel');
    const metrics = await httpGet(server.httpPort, '/metrics');
    assert.equal(metricValue(metrics, 'reapi_asset_fetches_total{kind="blob",result="fetched"}'), 1);
    const summary = parseProcessSummary(r.stderr);
    assert.ok(summary && (summary.remote ?? 0) > 0, summary?.line);
  });

  test('after bazel clean --expunge, the rebuild is all cache hits and the archive comes from the CAS', async () => {
    await bazel.clean({ expunge: true });
    const r = await bazel.run(['build', '//...', ...flags()]);
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const summary = parseProcessSummary(r.stderr);
    assert.ok(summary && allRemoteCacheHits(summary), `${summary?.line}\n${r.stderr.slice(-3000)}`);
    assert.equal(requests.filter((q) => q.path === '/greeting-1.0.tar.gz').length, 1, 'no second download from the origin');
    const metrics = await httpGet(server.httpPort, '/metrics');
    assert.ok(metricValue(metrics, 'reapi_asset_fetches_total{kind="blob",result="cached"}') >= 1);
    // Build without the Bytes: the final output is fetched on demand.
    const out = await bazel.run(['build', '//downloaded:shout', ...flags(), '--remote_download_outputs=toplevel']);
    assert.equal(out.code, 0, out.stderr.slice(-2000));
    assert.equal((await bazel.outputFile('downloaded/shout.txt')).toString(), 'HELLO FROM AN HTTP_ARCHIVE\n');
  });
});
