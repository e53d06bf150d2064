// The Remote Asset API over real gRPC against `reapi serve`, fetching from a real HTTP server on
// loopback: FetchBlob (cached, re-fetched, checksum.sri, fallbacks, headers, BLAKE3), the guard
// against fetching from private networks, FetchDirectory of tar.gz archives (and hostile ones),
// and Push (admins only, checksums checked).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { BLAKE3, SHA256 } from '../../common/digest-function.ts';
import { readResourceName } from '../../common/resource-name.ts';
import { metadataInterceptor } from '../../common/tls.ts';
import { services, type FetchClient, type MessageInput, type PushClient } from '../../protos/index.ts';
import { byteStreamRead, collect, expectGrpcError, unary } from '../support/storage.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';

const ADMIN_TOKEN = 'admin-token-0123456789abcdef';
const DEV_TOKEN = 'dev-token-0123456789abcdef01';

interface Origin {
  url: string;
  /** Requests seen, by path. */
  hits: Map<string, number>;
  headers: Map<string, http.IncomingHttpHeaders>;
  files: Map<string, Buffer>;
  close(): Promise<void>;
}

async function startOrigin(): Promise<Origin> {
  const hits = new Map<string, number>();
  const headers = new Map<string, http.IncomingHttpHeaders>();
  const files = new Map<string, Buffer>();
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    hits.set(path, (hits.get(path) ?? 0) + 1);
    headers.set(path, req.headers);
    if (path.startsWith('/redirect-to-metadata')) {
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
      return;
    }
    const body = files.get(path);
    if (!body) return void res.writeHead(404).end('no such file');
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, hits, headers, files, close: () => new Promise((r) => server.close(() => r())) };
}

const sri = (data: Buffer, alg = 'sha256') => `${alg}-${createHash(alg).update(data).digest('base64')}`;

function clients(s: TestServe, token?: string) {
  const address = `127.0.0.1:${s.server.grpcPort}`;
  const options = token ? { interceptors: [metadataInterceptor({ authorization: `Bearer ${token}` })] } : {};
  const creds = grpc.credentials.createInsecure();
  return {
    fetch: new services.Fetch(address, creds, options) as FetchClient,
    push: new services.Push(address, creds, options) as PushClient,
    close() {
      this.fetch.close();
      this.push.close();
    },
  };
}

describe('Remote Asset API', () => {
  let origin: Origin;
  let s: TestServe;
  let dir: string;
  let c: ReturnType<typeof clients>;
  before(async () => {
    origin = await startOrigin();
    dir = await mkdtemp(join(tmpdir(), 'reapi-asset-test-'));
    const tokens = join(dir, 'tokens');
    await writeFile(tokens, `ci-admin ${ADMIN_TOKEN}\ndev ${DEV_TOKEN}\n`);
    s = await startTestServe(
      {
        execution: { enabled: false },
        assets: { allowPrivateNetworks: true },
        auth: {
          tokensFile: tokens,
          principals: [
            { name: 'ci-admin', permissions: ['admin'] },
            { name: 'dev', permissions: ['cache-read', 'cache-write'] },
          ],
        },
      },
      { name: 'asset' },
    );
    c = clients(s, DEV_TOKEN);
  });
  after(async () => {
    c?.close();
    await s?.close();
    await origin?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const fetchBlob = (req: Partial<MessageInput<'FetchBlobRequest'>>, client = c.fetch) =>
    unary(client, client.FetchBlob, { instance_name: '', ...req } as MessageInput<'FetchBlobRequest'>);
  const read = async (d: { hash: string; size_bytes: number | string } | null | undefined, fn = SHA256) => {
    const bs = new services.ByteStream(`127.0.0.1:${s.server.grpcPort}`, grpc.credentials.createInsecure(), {
      interceptors: [metadataInterceptor({ authorization: `Bearer ${DEV_TOKEN}` })],
    });
    try {
      return await byteStreamRead(bs, readResourceName('', { hash: d!.hash, size_bytes: Number(d!.size_bytes) }, 'identity', fn));
    } finally {
      bs.close();
    }
  };

  test('FetchBlob downloads once, checks checksum.sri, and answers later fetches from the CAS', async () => {
    const data = randomBytes(300_000);
    origin.files.set('/dep-1.0.tar.gz', data);
    const req = { uris: [`${origin.url}/dep-1.0.tar.gz`], qualifiers: [{ name: 'checksum.sri', value: sri(data) }] };
    const first = await fetchBlob(req);
    assert.equal(first.status?.code, 0, first.status?.message);
    assert.equal(first.blob_digest?.hash, SHA256.hash(data));
    assert.equal(first.digest_function, 'SHA256');
    assert.ok((await read(first.blob_digest)).equals(data));
    const second = await fetchBlob(req);
    assert.equal(second.blob_digest?.hash, first.blob_digest?.hash);
    assert.equal(origin.hits.get('/dep-1.0.tar.gz'), 1, 'the second fetch came from the CAS');
    // Content newer than what is stored is asked for: fetched again.
    const fresh = await fetchBlob({ ...req, oldest_content_accepted: { seconds: Math.floor(Date.now() / 1000) + 60, nanos: 0 } });
    assert.equal(fresh.status?.code, 0);
    assert.equal(origin.hits.get('/dep-1.0.tar.gz'), 2);
  });

  test('a checksum mismatch is ABORTED in the response and stores nothing; the next URI is tried', async () => {
    const good = randomBytes(1000);
    const bad = randomBytes(1000);
    origin.files.set('/mirror-bad', bad);
    origin.files.set('/mirror-good', good);
    const mismatch = await fetchBlob({ uris: [`${origin.url}/mirror-bad`], qualifiers: [{ name: 'checksum.sri', value: sri(good) }] });
    assert.equal(mismatch.status?.code, grpc.status.ABORTED);
    assert.match(mismatch.status!.message, /checksum mismatch/);
    assert.equal(mismatch.blob_digest, null);
    const fallback = await fetchBlob({
      uris: [`${origin.url}/missing`, `${origin.url}/mirror-bad`, `${origin.url}/mirror-good`],
      qualifiers: [{ name: 'checksum.sri', value: `${sri(good, 'sha384')} ${sri(good)}` }],
    });
    assert.equal(fallback.status?.code, 0, fallback.status?.message);
    assert.equal(fallback.uri, `${origin.url}/mirror-good`);
    const notFound = await fetchBlob({ uris: [`${origin.url}/missing`] });
    assert.equal(notFound.status?.code, grpc.status.NOT_FOUND);
    assert.match(notFound.status!.message, /HTTP 404/);
  });

  test('header qualifiers are sent; unknown qualifiers are refused with a BadRequest', async () => {
    origin.files.set('/private-dep', Buffer.from('secret dep'));
    const res = await fetchBlob({
      uris: [`${origin.url}/private-dep`],
      qualifiers: [
        { name: 'http_header:Authorization', value: 'Bearer upstream' },
        { name: 'bazel.canonical_id', value: 'private-dep-1' },
      ],
    });
    assert.equal(res.status?.code, 0, res.status?.message);
    assert.equal(origin.headers.get('/private-dep')?.authorization, 'Bearer upstream');
    const err = await expectGrpcError(fetchBlob({ uris: [`${origin.url}/private-dep`], qualifiers: [{ name: 'vcs.commit', value: 'abc' }] }), grpc.status.INVALID_ARGUMENT, /"vcs.commit" is not supported/);
    assert.equal(err.metadata.get('grpc-status-details-bin').length, 1, 'a BadRequest detail comes with the error');
    await expectGrpcError(fetchBlob({ uris: [] }), grpc.status.INVALID_ARGUMENT, /uris is empty/);
  });

  test('BLAKE3: the digest_function of the request is the one of the answer', async () => {
    const data = randomBytes(5000);
    origin.files.set('/b3', data);
    const res = await fetchBlob({ uris: [`${origin.url}/b3`], digest_function: 'BLAKE3', qualifiers: [{ name: 'checksum.sri', value: sri(data) }] });
    assert.equal(res.status?.code, 0, res.status?.message);
    assert.equal(res.digest_function, 'BLAKE3');
    assert.equal(res.blob_digest?.hash, BLAKE3.hash(data));
    assert.ok((await read(res.blob_digest, BLAKE3)).equals(data));
  });

  test('FetchDirectory unpacks a tar.gz into a Directory tree; an archive escaping with ".." is refused', async () => {
    const src = join(dir, 'src');
    await mkdir(join(src, 'pkg', 'lib'), { recursive: true });
    await writeFile(join(src, 'pkg', 'BUILD'), 'filegroup(name = "all")\n');
    await writeFile(join(src, 'pkg', 'lib', 'a.txt'), 'A');
    await writeFile(join(src, 'pkg', 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    execFileSync('tar', ['-czf', join(dir, 'pkg.tar.gz'), '-C', src, 'pkg']);
    origin.files.set('/pkg.tar.gz', await readFile(join(dir, 'pkg.tar.gz')));
    const res = await unary(c.fetch, c.fetch.FetchDirectory, { instance_name: '', uris: [`${origin.url}/pkg.tar.gz`] } as MessageInput<'FetchDirectoryRequest'>);
    assert.equal(res.status?.code, 0, res.status?.message);
    const cas = new services.ContentAddressableStorage(`127.0.0.1:${s.server.grpcPort}`, grpc.credentials.createInsecure(), {
      interceptors: [metadataInterceptor({ authorization: `Bearer ${DEV_TOKEN}` })],
    });
    try {
      const pages = await collect(cas.GetTree({ instance_name: '', root_digest: res.root_directory_digest }));
      const dirs = pages.flatMap((p) => p.directories);
      assert.deepEqual(dirs[0]!.directories.map((d) => d.name), ['pkg']);
      const pkg = dirs.find((d) => d.files.some((f) => f.name === 'BUILD'))!;
      assert.deepEqual(pkg.files.map((f) => [f.name, f.is_executable]), [['BUILD', false], ['run.sh', true]]);
      const lib = dirs.find((d) => d.files.some((f) => f.name === 'a.txt'))!;
      assert.ok((await read(lib.files[0]!.digest)).equals(Buffer.from('A')));
    } finally {
      cas.close();
    }
    // Hostile: an entry named ../escape.
    await writeFile(join(dir, 'escape'), 'x');
    execFileSync('tar', ['-czf', join(dir, 'evil.tar.gz'), '-C', join(dir, 'src'), '--transform', 's,^,../,', 'pkg/BUILD'], { stdio: 'ignore' });
    origin.files.set('/evil.tar.gz', await readFile(join(dir, 'evil.tar.gz')));
    const evil = await unary(c.fetch, c.fetch.FetchDirectory, { instance_name: '', uris: [`${origin.url}/evil.tar.gz`] } as MessageInput<'FetchDirectoryRequest'>);
    assert.equal(evil.status?.code, grpc.status.ABORTED);
    assert.match(evil.status!.message, /leaves the archive/);
    const notArchive = await unary(c.fetch, c.fetch.FetchDirectory, { instance_name: '', uris: [`${origin.url}/b3`] } as MessageInput<'FetchDirectoryRequest'>);
    assert.equal(notArchive.status?.code, grpc.status.ABORTED);
  });

  test('Push: refused to non-admins; an admin push is fetched without a download, its checksum checked', async () => {
    const data = Buffer.from('pushed by CI');
    const bs = new services.ContentAddressableStorage(`127.0.0.1:${s.server.grpcPort}`, grpc.credentials.createInsecure(), {
      interceptors: [metadataInterceptor({ authorization: `Bearer ${DEV_TOKEN}` })],
    });
    const digest = SHA256.digestOf(data);
    try {
      await unary(bs, bs.BatchUpdateBlobs, { instance_name: '', requests: [{ digest, data }] });
    } finally {
      bs.close();
    }
    const uri = 'https://mirror.example/never-fetched.bin';
    const req = { instance_name: '', uris: [uri], blob_digest: digest, qualifiers: [{ name: 'checksum.sri', value: sri(data) }] } as MessageInput<'PushBlobRequest'>;
    await expectGrpcError(unary(c.push, c.push.PushBlob, req), grpc.status.PERMISSION_DENIED, /admin/);
    const admin = clients(s, ADMIN_TOKEN);
    try {
      await unary(admin.push, admin.push.PushBlob, req);
      await expectGrpcError(
        unary(admin.push, admin.push.PushBlob, { ...req, qualifiers: [{ name: 'checksum.sri', value: sri(Buffer.from('other')) }] }),
        grpc.status.ABORTED,
        /checksum mismatch/,
      );
    } finally {
      admin.close();
    }
    const res = await fetchBlob({ uris: [uri], qualifiers: [{ name: 'checksum.sri', value: sri(data) }] });
    assert.equal(res.status?.code, 0, res.status?.message);
    assert.equal(res.blob_digest?.hash, digest.hash);
  });
});

describe('Remote Asset API: no fetching from private networks by default', () => {
  let origin: Origin;
  let s: TestServe;
  before(async () => {
    origin = await startOrigin();
    origin.files.set('/internal', Buffer.from('internal only'));
    s = await startTestServe({ execution: { enabled: false } }, { name: 'asset-ssrf' });
  });
  after(async () => {
    await s?.close();
    await origin?.close();
  });

  test('loopback by address or by name, and redirects to link-local, are PERMISSION_DENIED', async () => {
    const c = clients(s);
    try {
      const port = new URL(origin.url).port;
      for (const uri of [`${origin.url}/internal`, `http://localhost:${port}/internal`, `http://[::1]:${port}/internal`]) {
        const res = await unary(c.fetch, c.fetch.FetchBlob, { instance_name: '', uris: [uri] } as MessageInput<'FetchBlobRequest'>);
        assert.equal(res.status?.code, grpc.status.PERMISSION_DENIED, `${uri}: ${res.status?.message}`);
        assert.match(res.status!.message, /allowPrivateNetworks/);
      }
      assert.equal(origin.hits.get('/internal'), undefined, 'the origin was never reached');
      const file = await unary(c.fetch, c.fetch.FetchBlob, { instance_name: '', uris: ['file:///etc/passwd'] } as MessageInput<'FetchBlobRequest'>);
      assert.equal(file.status?.code, grpc.status.INVALID_ARGUMENT);
    } finally {
      c.close();
    }
  });
});
