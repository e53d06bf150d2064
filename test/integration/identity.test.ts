// Identity over real gRPC and HTTP: TLS, mTLS, static bearer tokens, JWTs, permissions per
// principal and instance prefix, the local user's trust on loopback, certificate reload, and the
// refusal to listen beyond loopback unprotected. Certificates come from a CA made at run time.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { SignJWT } from 'jose';
import { createGuard } from '../../common/auth/index.ts';
import { RedisReportStore } from '../../execution/report-store.ts';
import { BullmqJobQueue } from '../../scheduler/queue/bullmq/index.ts';
import { startRedis } from '../support/redis.ts';
import { provenanceOf, withProvenance } from '../../cas/provenance.ts';
import { createStorage } from '../../cas/storage-factory.ts';
import { startStorageNode } from '../../cas/storage-node.ts';
import { silentLogger } from '../../common/logger.ts';
import { Metrics } from '../../common/metrics.ts';
import { parseConfig } from '../../common/config.ts';
import { digestOf } from '../../common/digest.ts';
import { connectExec, execute, lookupActionResult, run, type ExecClients } from '../support/execution.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';
import { makeTestPki, type TestPki } from '../support/tls.ts';
import type { MessageOutput } from '../../protos/index.ts';

const BIN = fileURLToPath(new URL('../../bin/reapi.mjs', import.meta.url));

let pki: TestPki;
const servers: TestServe[] = [];
const clients: ExecClients[] = [];
before(() => {
  pki = makeTestPki();
});
after(async () => {
  for (const c of clients) c.close();
  for (const s of servers) await s.close();
});

async function serve(overrides: Record<string, unknown>): Promise<TestServe> {
  const s = await startTestServe({ storage: { backend: 'memory' }, ...overrides }, { name: 'reapi-identity' });
  servers.push(s);
  return s;
}

/** A client of `s` over TLS (trusting the test CA), with an optional token or client certificate. */
function client(s: TestServe, opts: { token?: string; cert?: { cert: string; key: string }; instance?: string; plaintext?: boolean } = {}): ExecClients {
  let tokenFile: string | undefined;
  if (opts.token !== undefined) {
    tokenFile = join(pki.dir, `token-${randomBytes(4).toString('hex')}`);
    writeFileSync(tokenFile, opts.token);
  }
  const endpoint = `${opts.plaintext ? 'grpc' : 'grpcs'}://127.0.0.1:${s.server.grpcPort}`;
  const c = connectExec(endpoint, opts.instance ?? 'main', {
    ca: pki.ca,
    ...(tokenFile ? { tokenFile } : {}),
    ...(opts.cert ? { cert: opts.cert.cert, key: opts.cert.key } : {}),
  });
  clients.push(c);
  return c;
}

async function rejectsWith(p: Promise<unknown>, code: grpc.status, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: grpc.ServiceError) => {
    assert.equal(err.code, code, `${grpc.status[err.code]}: ${err.details}`);
    if (message) assert.match(err.details, message);
    return true;
  });
}

function findMissing(c: ExecClients): Promise<unknown> {
  return new Promise((resolve, reject) =>
    c.cas.FindMissingBlobs({ instance_name: c.instance, blob_digests: [digestOf(Buffer.from('x'))] }, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

function upload(c: ExecClients, data: Buffer): Promise<unknown> {
  return new Promise((resolve, reject) =>
    c.cas.BatchUpdateBlobs({ instance_name: c.instance, requests: [{ digest: digestOf(data), data }] }, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

function httpsGet(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, ca: [readFileSync(pki.ca)], headers }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('TLS and bearer tokens', () => {
  let s: TestServe;
  const tokens = { ci: `ci-${randomBytes(16).toString('hex')}`, reader: `reader-${randomBytes(16).toString('hex')}`, teamA: `team-a-${randomBytes(16).toString('hex')}` };
  before(async () => {
    const tokensFile = join(pki.dir, 'tokens');
    writeFileSync(tokensFile, `# principal token\nci ${tokens.ci}\nreader ${tokens.reader}\nteam-a ${tokens.teamA}\n`);
    s = await serve({
      tls: { cert: pki.server.cert, key: pki.server.key },
      auth: {
        tokensFile,
        principals: [
          { name: 'ci', permissions: ['cache-read', 'cache-write', 'execute'] },
          { name: 'reader', permissions: ['cache-read'] },
          { name: 'team-a', permissions: ['cache-read', 'cache-write', 'execute', 'reports-read'], instances: ['team-a/'] },
        ],
      },
    });
  });

  test('a token with the permissions executes over TLS and gets a cache hit the second time', async () => {
    const c = client(s, { token: tokens.ci });
    const first = await run(c, { sh: 'echo tls > out.txt', outputFiles: ['out.txt'] });
    assert.equal(first.response.status?.code ?? 0, 0);
    const again = await execute(c, first.action.actionDigest);
    assert.equal(again.response.cached_result, true);
  });

  test('without a token, with a wrong one, or in plaintext, nothing is served', async () => {
    await rejectsWith(findMissing(client(s)), grpc.status.UNAUTHENTICATED, /needs credentials/);
    await rejectsWith(findMissing(client(s, { token: 'not-a-token-anyone-has' })), grpc.status.UNAUTHENTICATED, /bearer token is not one this server knows/);
    await rejectsWith(findMissing(client(s, { token: tokens.ci, plaintext: true })), grpc.status.UNAVAILABLE);
  });

  test('a read-only principal gets cache hits but can neither write nor execute', async () => {
    const writer = client(s, { token: tokens.ci });
    const { action } = await run(writer, { sh: 'echo shared > out.txt', outputFiles: ['out.txt'] });
    const reader = client(s, { token: tokens.reader });
    assert.ok(await lookupActionResult(reader, action.actionDigest), 'the reader sees the entry');
    await rejectsWith(upload(reader, Buffer.from('from the reader')), grpc.status.PERMISSION_DENIED, /principal "reader" \(token\) lacks the permission "cache-write"/);
    await rejectsWith(run(reader, { sh: 'echo nope' }), grpc.status.PERMISSION_DENIED, /lacks the permission "(cache-write|execute)"/);
  });

  test('a principal limited to an instance prefix may use only those instances', async () => {
    await findMissing(client(s, { token: tokens.teamA, instance: 'team-a/main' }));
    await rejectsWith(findMissing(client(s, { token: tokens.teamA, instance: 'team-b/main' })), grpc.status.PERMISSION_DENIED, /may not use instance "team-b\/main".*"team-a\/"/);
  });

  test('reapi reports speaks HTTPS with the CA and a token, and says why when refused', async () => {
    const tokenFile = join(pki.dir, 'reports-token');
    writeFileSync(tokenFile, tokens.teamA);
    const base = [BIN, 'reports', '--http', `https://127.0.0.1:${s.server.httpPort}`, '--tls-ca', pki.ca, '--json'];
    // Not spawnSync: the server runs in this process.
    const cli = async (args: string[]) => {
      const { execFile } = await import('node:child_process');
      return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, args, { timeout: 30_000 }, (err, stdout, stderr) => resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
      );
    };
    const ok = await cli([...base, '--token-file', tokenFile]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), []);
    const refused = await cli(base);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /answered 401: .*needs credentials/);
  });

  test('HTTP: /metrics is open, /api/reports needs reports-read', async () => {
    const port = s.server.httpPort;
    assert.equal((await httpsGet(port, '/metrics')).status, 200);
    assert.equal((await httpsGet(port, '/api/reports')).status, 401);
    const denied = await httpsGet(port, '/api/reports', { authorization: `Bearer ${tokens.reader}` });
    assert.equal(denied.status, 403);
    assert.match(denied.body, /lacks the permission "reports-read"/);
    assert.equal((await httpsGet(port, '/api/reports', { authorization: `Bearer ${tokens.teamA}` })).status, 200);
  });
});

describe('JWTs', () => {
  test('a JWT signed by the configured key names a principal; an expired or foreign one is refused', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const keysFile = join(pki.dir, 'jwt.pub.pem');
    writeFileSync(keysFile, publicKey.export({ type: 'spki', format: 'pem' }));
    const s = await serve({
      tls: { cert: pki.server.cert, key: pki.server.key },
      auth: { jwt: { issuer: 'https://idp.example', audience: 'reapi', keysFile }, principals: [{ name: 'alice', permissions: ['cache-read'] }] },
    });
    const sign = (claims: { sub: string; exp?: number }, key = privateKey, iss = 'https://idp.example') =>
      new SignJWT({}).setProtectedHeader({ alg: 'ES256' }).setSubject(claims.sub).setIssuer(iss).setAudience('reapi').setIssuedAt().setExpirationTime(claims.exp ?? '10m').sign(key);
    await findMissing(client(s, { token: await sign({ sub: 'alice' }) }));
    await rejectsWith(findMissing(client(s, { token: await sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 60 }) })), grpc.status.UNAUTHENTICATED, /not a valid JWT.*exp/);
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    await rejectsWith(findMissing(client(s, { token: await sign({ sub: 'alice' }, other) })), grpc.status.UNAUTHENTICATED, /not a valid JWT/);
    await rejectsWith(findMissing(client(s, { token: await sign({ sub: 'alice' }, privateKey, 'https://evil.example') })), grpc.status.UNAUTHENTICATED, /not a valid JWT.*iss/);
    await rejectsWith(findMissing(client(s, { token: await sign({ sub: 'mallory' }) })), grpc.status.PERMISSION_DENIED, /principal "mallory" \(jwt\) lacks the permission "cache-read"/);
  });
});

describe('mTLS', () => {
  test('the client certificate is the principal; no certificate or a foreign CA gets no connection', async () => {
    const s = await serve({
      tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca },
      auth: { principals: [{ name: 'builder', permissions: ['cache-read', 'cache-write', 'execute'] }] },
    });
    const builder = client(s, { cert: pki.client('builder') });
    const out = await run(builder, { sh: 'echo mtls' });
    assert.equal(out.response.status?.code ?? 0, 0);
    await rejectsWith(findMissing(client(s, { cert: pki.client('stranger') })), grpc.status.PERMISSION_DENIED, /principal "stranger" \(mtls\) lacks/);
    await rejectsWith(findMissing(client(s)), grpc.status.UNAVAILABLE);
    await rejectsWith(findMissing(client(s, { cert: pki.client('builder', { otherCa: true }) })), grpc.status.UNAVAILABLE);
  });
});

describe('certificates are reloaded', () => {
  test('a renewed server certificate is served without a restart', { timeout: 60_000 }, async () => {
    const cert = join(pki.dir, 'live.pem');
    const key = join(pki.dir, 'live.key');
    copyFileSync(pki.server.cert, cert);
    copyFileSync(pki.server.key, key);
    const s = await serve({ tls: { cert, key } });
    const serialOf = (port: number, alpn = ['h2', 'http/1.1']) =>
      new Promise<string>((resolve, reject) => {
        const sock = tlsConnect({ host: '127.0.0.1', port, ca: [readFileSync(pki.ca)], servername: 'localhost', ALPNProtocols: alpn }, () => {
          resolve(sock.getPeerCertificate().serialNumber.toUpperCase());
          sock.end();
        });
        sock.on('error', reject);
      });
    const before = await serialOf(s.server.grpcPort);
    const renewed = pki.reissueServer();
    copyFileSync(renewed.key, key);
    copyFileSync(renewed.cert, cert);
    const deadline = Date.now() + 40_000;
    let grpcSerial = before;
    let httpSerial = await serialOf(s.server.httpPort);
    while ((grpcSerial !== renewed.serial || httpSerial !== renewed.serial) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      grpcSerial = await serialOf(s.server.grpcPort);
      httpSerial = await serialOf(s.server.httpPort);
    }
    assert.notEqual(before, renewed.serial);
    assert.equal(grpcSerial, renewed.serial, 'gRPC serves the renewed certificate');
    assert.equal(httpSerial, renewed.serial, 'HTTP serves the renewed certificate');
  });
});

describe('defaults', () => {
  test('on loopback with nothing configured, the local user reads, writes the ActionCache and executes', async () => {
    const s = await serve({});
    const c = client(s, { plaintext: true });
    const caps = await new Promise<MessageOutput<'ServerCapabilities'>>((resolve, reject) =>
      c.capabilities.GetCapabilities({ instance_name: 'main' }, (err, res) => (err ? reject(err) : resolve(res!))),
    );
    assert.equal(caps.cache_capabilities?.action_cache_update_capabilities?.update_enabled, true, 'Bazel --remote_cache may upload local results');
    const d = digestOf(Buffer.from(`local ${randomBytes(8).toString('hex')}`));
    await new Promise((resolve, reject) =>
      c.actionCache.UpdateActionResult({ instance_name: 'main', action_digest: d, action_result: { exit_code: 0 } }, (err, res) => (err ? reject(err) : resolve(res))),
    );
    assert.ok(await lookupActionResult(c, d));
  });

  test('beyond loopback, a role without TLS and credentials refuses to start unless --insecure', () => {
    const base = { listen: '0.0.0.0' };
    assert.throws(() => createGuard(parseConfig(base)), /refusing to listen on 0\.0\.0\.0 without TLS .* or pass --insecure/);
    assert.throws(() => createGuard(parseConfig({ ...base, tls: { cert: pki.server.cert, key: pki.server.key } })), /without credentials/);
    createGuard(parseConfig({ ...base, auth: { insecure: true } }));
    createGuard(parseConfig({ ...base, tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca } }));
    const r = spawnSync(process.execPath, [BIN, 'cas', '--listen', '0.0.0.0', '--port', '0', '--http-port', '0', '--data-dir', join(pki.dir, 'refused')], { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /refusing to listen on 0\.0\.0\.0/);
  });
});

describe('a fleet whose storage nodes require credentials', () => {
  test('workers write the ActionCache with their own credentials; a client cannot, forged provenance or not', async () => {
    const tokens = { worker: `w-${randomBytes(16).toString('hex')}`, client: `c-${randomBytes(16).toString('hex')}` };
    const tokensFile = join(pki.dir, 'fleet-tokens');
    writeFileSync(tokensFile, `worker-1 ${tokens.worker}\nclient-x ${tokens.client}\n`);
    const nodeConfig = parseConfig({
      port: 0, httpPort: 0, listen: '127.0.0.1', logLevel: 'silent', dataDir: join(pki.dir, 'fleet-node'),
      tls: { cert: pki.server.cert, key: pki.server.key },
      auth: { tokensFile, principals: [{ name: 'worker-1', permissions: ['worker', 'cache-read', 'cache-write'] }, { name: 'client-x', permissions: ['cache-read', 'cache-write'] }] },
    });
    const node = await startStorageNode(nodeConfig, silentLogger);
    try {
      const address = `grpcs://127.0.0.1:${node.grpcPort}`;
      const tokenFile = (t: string) => {
        const f = join(pki.dir, `tok-${randomBytes(4).toString('hex')}`);
        writeFileSync(f, t);
        return f;
      };
      // A worker's storage chain, as `reapi worker --cas grpcs://... --tls-ca --token-file` builds it.
      const workerConfig = parseConfig({ cas: [address], client: { ca: pki.ca, tokenFile: tokenFile(tokens.worker) }, logLevel: 'silent' });
      const worker = await createStorage('worker', { config: workerConfig, metrics: new Metrics(), logger: silentLogger });
      const action = digestOf(Buffer.from(`fleet ${randomBytes(8).toString('hex')}`));
      const forged = withProvenance({ exit_code: 0 }, { source: 'worker', worker: 'worker-1', verified: true });
      await worker.actionCache.put('main', action, forged);
      const stored = await worker.actionCache.get('main', action);
      assert.equal(stored && provenanceOf(stored).source, 'worker', 'a worker principal keeps its provenance');
      worker.close();

      const asClient = (t?: string) => connectExec(address, 'main', { ca: pki.ca, ...(t ? { tokenFile: tokenFile(t) } : {}) });
      const update = (c: ExecClients) =>
        new Promise((resolve, reject) => c.actionCache.UpdateActionResult({ instance_name: 'main', action_digest: action, action_result: forged }, (err, res) => (err ? reject(err) : resolve(res))));
      const client = asClient(tokens.client);
      clients.push(client);
      await rejectsWith(update(client), grpc.status.PERMISSION_DENIED, /clientWrites is "deny"/);
      const stranger = asClient();
      clients.push(stranger);
      await rejectsWith(update(stranger), grpc.status.UNAUTHENTICATED);
      assert.equal(provenanceOf((await lookupActionResult(client, action))!).worker, 'worker-1', 'the entry is the worker\'s still');
    } finally {
      await node.close();
    }
  });
});

describe('Redis over rediss:// with a password', () => {
  test('the BullMQ queue and the report store work over TLS; a wrong password is refused', async () => {
    const redis = await startRedis({ tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca }, password: `pw-${randomBytes(8).toString('hex')}` });
    try {
      assert.match(redis.url, /^rediss:\/\/:pw-[0-9a-f]+@127\.0\.0\.1:\d+$/);
      const q = new BullmqJobQueue({ redisUrl: redis.url, redisCa: pki.ca, prefix: 'tls', heartbeatMs: 500, drainDelaySec: 1 });
      try {
        const stop = await q.work({ name: 'w', platform: { OSFamily: 'linux' }, concurrency: 1 }, async () => Buffer.from('over tls'));
        const { operationName } = await q.submit({ instanceName: 'main', actionDigest: digestOf(Buffer.from('tls job')), priority: 0, platform: { OSFamily: 'linux' }, doNotCache: false });
        const done = await new Promise<OperationStateLike>((resolve) => {
          const unwatch = q.watch(operationName, (st) => {
            if (st.done) {
              queueMicrotask(() => unwatch());
              resolve(st);
            }
          });
        });
        assert.equal(done.response?.toString(), 'over tls');
        await stop();
      } finally {
        await q.close();
      }
      const reports = new RedisReportStore({ url: redis.url, ca: pki.ca }, 'tls');
      await reports.add({ id: 'r1', kind: 'nondeterministic', createdAt: new Date().toISOString(), instanceName: 'main', actionDigest: digestOf(Buffer.from('a')), workers: [], variation: [], differences: [], results: [] });
      assert.equal((await reports.list())[0]?.id, 'r1');
      await reports.close();
      const wrong = new RedisReportStore({ url: redis.url.replace(/:pw-[0-9a-f]+@/, ':wrong@'), ca: pki.ca }, 'tls');
      await assert.rejects(wrong.list(), /WRONGPASS|invalid username-password/);
      await wrong.close();
    } finally {
      await redis.stop();
    }
  });
});

type OperationStateLike = { done: boolean; response?: Buffer };
