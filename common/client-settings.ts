// What our clients (`reapi cargo`, `reapi expand`, `reapi reports`, schedulers and workers calling
// storage nodes) present and trust, from flags or the environment. Apart from common/tls.ts so
// commands can read them without loading gRPC.
import { readFileSync } from 'node:fs';
import type { Config } from './config.ts';
import { wrapPlain } from './error-text.ts';

/** Environment variables that carry client settings to the processes a client command starts. */
export const CLIENT_ENV = { ca: 'REAPI_TLS_CA', cert: 'REAPI_TLS_CLIENT_CERT', key: 'REAPI_TLS_CLIENT_KEY', tokenFile: 'REAPI_TOKEN_FILE' } as const;

/** Client settings from flags, falling back to the environment. */
export function clientSettings(flags: Partial<Record<keyof typeof CLIENT_ENV, string | undefined>> = {}, env: NodeJS.ProcessEnv = process.env): Config['client'] {
  const out: Config['client'] = {};
  for (const key of Object.keys(CLIENT_ENV) as Array<keyof typeof CLIENT_ENV>) {
    const v = flags[key] ?? (env[CLIENT_ENV[key]] || undefined);
    if (v !== undefined) out[key] = v;
  }
  return out;
}

/** The environment entries that hand `client` on to child processes. */
export function clientEnv(client: Config['client']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(CLIENT_ENV) as Array<keyof typeof CLIENT_ENV>) {
    const v = client[key];
    if (v !== undefined) out[CLIENT_ENV[key]] = v;
  }
  return out;
}

/** The bearer token our clients send, from `client.tokenFile` (or undefined). */
export function clientToken(client: Config['client']): string | undefined {
  if (!client.tokenFile) return undefined;
  try {
    return readFileSync(client.tokenFile, 'utf8').trim();
  } catch (err) {
    throw wrapPlain(err, `token file (--token-file): cannot read ${client.tokenFile}`);
  }
}
