// `reapi reports`: the nondeterminism and cache-poisoning reports of a running server, newest
// first, read from its HTTP API (GET /api/reports).
import type { Report } from '../execution/report-store.ts';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Config } from '../common/config.ts';
import { messageOf } from '../common/error-text.ts';
import { clientToken } from '../common/client-settings.ts';
import { clientSettingsOf, type ClientFlags } from './client-flags.ts';

export interface ReportsFlags extends ClientFlags {
  http: string;
  json?: boolean;
  target?: string;
  mnemonic?: string;
  kind?: string;
  limit?: string;
}

export async function printReports(flags: ReportsFlags): Promise<void> {
  const url = new URL('/api/reports', flags.http);
  for (const key of ['target', 'mnemonic', 'kind', 'limit'] as const) {
    const v = flags[key];
    if (v) url.searchParams.set(key, v);
  }
  let res: { status: number; body: string };
  try {
    res = await get(url, clientSettingsOf(flags));
  } catch (err) {
    throw new Error(`cannot reach ${url.origin}: ${messageOf(err)} (is reapi serve or reapi scheduler running there? set --http)`, { cause: err });
  }
  if (res.status !== 200) throw new Error(`${url} answered ${res.status}: ${res.body}`);
  const reports = JSON.parse(res.body) as Report[];
  if (flags.json) {
    process.stdout.write(JSON.stringify(reports, null, 2) + '\n');
    return;
  }
  if (reports.length === 0) {
    process.stdout.write('no reports\n');
    return;
  }
  for (const r of reports) {
    process.stdout.write(
      `${r.createdAt}  ${r.kind}  ${r.target ?? '(no target)'}  ${r.mnemonic ?? ''}\n` +
        `  action ${r.actionDigest.hash}/${r.actionDigest.size_bytes} (instance "${r.instanceName}"), report ${r.id}\n` +
        (r.variation.length ? `  varied: ${r.variation.join(', ')}\n` : '') +
        r.differences.slice(0, 10).map((d) => `  - ${d.what}: ${d.detail}\n`).join('') +
        (r.differences.length > 10 ? `  ... ${r.differences.length - 10} more\n` : '') +
        `  results: ${r.results.map((d) => `${d.hash}/${d.size_bytes}`).join('  ')}\n\n`,
    );
  }
}

/** GET over HTTP or HTTPS, with the CA, client certificate and bearer token configured. */
function get(url: URL, client: Config['client']): Promise<{ status: number; body: string }> {
  const token = clientToken(client);
  const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const tls = url.protocol === 'https:' ? { ...(client.ca ? { ca: readFileSync(client.ca) } : {}), ...(client.cert ? { cert: readFileSync(client.cert) } : {}), ...(client.key ? { key: readFileSync(client.key) } : {}) } : {};
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { headers, ...tls }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}
