// A throwaway CA and certificates, made with openssl at run time: a server certificate for
// localhost / 127.0.0.1, and client certificates whose subject CN names a principal.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  dir: string;
  ca: string;
  server: { cert: string; key: string };
  /** A client certificate (and key) with subject CN `name`, signed by `ca` (or another CA). */
  client(name: string, opts?: { otherCa?: boolean }): { cert: string; key: string };
  /** A fresh server certificate in new files (to test reloading). */
  reissueServer(): { cert: string; key: string; serial: string };
}

function ssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  ssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`]);
  return { cert, key };
}

function sign(dir: string, ca: { cert: string; key: string }, name: string, cn: string, ext: string): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const extFile = join(dir, `${name}.ext`);
  writeFileSync(extFile, ext);
  ssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`]);
  ssl(dir, ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', extFile]);
  return { cert, key };
}

export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'reapi-pki-'));
  const ca = makeCa(dir, 'ca');
  const other = makeCa(dir, 'other-ca');
  const serverExt = 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n';
  let reissued = 0;
  return {
    dir,
    ca: ca.cert,
    server: sign(dir, ca, 'server', 'localhost', serverExt),
    client: (name, opts = {}) => sign(dir, opts.otherCa ? other : ca, `client-${name}${opts.otherCa ? '-other' : ''}`, name, 'extendedKeyUsage=clientAuth\n'),
    reissueServer() {
      const s = sign(dir, ca, `server-${++reissued}`, 'localhost', serverExt);
      const serial = execFileSync('openssl', ['x509', '-in', s.cert, '-noout', '-serial'], { encoding: 'utf8' }).trim().replace(/^serial=/, '');
      return { ...s, serial };
    },
  };
}
