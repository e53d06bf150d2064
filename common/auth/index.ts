// The auth of a role, built from config: who is trusted without credentials, and whether the
// role may listen where it is configured to.
import type { Config } from '../config.ts';
import { Authenticator } from './authenticator.ts';
import { CallGuard } from './guard.ts';

export { CallGuard, principalOf } from './guard.ts';
export { FLEET_TOKEN_HEADER } from './authenticator.ts';
export type { Permission, Principal } from './permissions.ts';

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Whether any way of proving who one is (or what strangers may do) is configured. */
export function credentialsConfigured(config: Pick<Config, 'auth' | 'tls'>): boolean {
  const { auth, tls } = config;
  return auth.tokensFile !== undefined || auth.jwt !== undefined || tls.clientCa !== undefined || auth.principals.length > 0 || auth.anonymous.length > 0;
}

/**
 * The role's guard. With no credentials configured, callers are trusted as the machine's own user
 * (read, write, execute, reports) where that is safe: on loopback, or where the operator said
 * `--insecure`. Refuses (throws) to expose a role beyond loopback without TLS and credentials.
 */
export function createGuard(config: Pick<Config, 'auth' | 'tls' | 'listen' | 'fleetToken'>): CallGuard {
  const configured = credentialsConfigured(config);
  const loopback = isLoopback(config.listen);
  if (!loopback && !config.auth.insecure && !(configured && config.tls.cert)) {
    throw new Error(
      `refusing to listen on ${config.listen} without ${config.tls.cert ? '' : 'TLS (--tls-cert, --tls-key) and '}credentials ` +
        '(--tls-client-ca, auth.tokensFile or auth.jwt with auth.principals): anyone who reaches this port could read and write every cache ' +
        'and run code on the workers. Configure them, or pass --insecure on a network you trust.',
    );
  }
  if ((config.tls.cert === undefined) !== (config.tls.key === undefined)) throw new Error('TLS needs both --tls-cert and --tls-key');
  if (config.tls.clientCa !== undefined && config.tls.cert === undefined) throw new Error('--tls-client-ca (client certificates) needs --tls-cert and --tls-key');
  return new CallGuard(new Authenticator(config, { trustLocalUser: !configured && (loopback || config.auth.insecure), mtls: config.tls.clientCa !== undefined }));
}
