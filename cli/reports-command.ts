// `reapi reports`: the nondeterminism and cache-poisoning reports of a running server, newest
// first, read from its HTTP API (GET /api/reports).
import type { Report } from '../execution/report-store.ts';
import { messageOf } from '../common/errors.ts';

export interface ReportsFlags {
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
  let res: Response;
  try {
    res = await fetch(url);
  } catch (err) {
    throw new Error(`cannot reach ${url.origin}: ${messageOf(err)} (is reapi serve or reapi scheduler running there? set --http)`, { cause: err });
  }
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${await res.text()}`);
  const reports = (await res.json()) as Report[];
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
