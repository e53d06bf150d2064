// TLS for our listeners and our clients. Server certificates (and the client CA) are files that
// are re-read when they change, so a renewed certificate is served without a restart.
import { readFileSync, watchFile, unwatchFile } from 'node:fs';
import type { SecureContextOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { Config } from './config.ts';
import { wrap } from './errors.ts';

/** How often certificate files are checked for changes. */
export const CERT_REFRESH_MS = 10_000;

function read(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw wrap(err, `${what}: cannot read ${file}`);
  }
}

/**
 * gRPC server credentials: plaintext, TLS, or TLS requiring client certificates (mTLS), and a
 * promise that the files have been read (grpc-js reads them asynchronously and drops connections
 * until then: bind, then wait for it before saying the server listens).
 */
export function grpcServerCredentials(tls: Config['tls']): { credentials: grpc.ServerCredentials; loaded: Promise<void> } {
  if (!tls.cert || !tls.key) return { credentials: grpc.ServerCredentials.createInsecure(), loaded: Promise.resolve() };
  // Read once now, so a wrong path fails the start with a clear message.
  read(tls.cert, '--tls-cert');
  read(tls.key, '--tls-key');
  if (tls.clientCa) read(tls.clientCa, '--tls-client-ca');
  const identity = new grpc.experimental.FileWatcherCertificateProvider({ certificateFile: tls.cert, privateKeyFile: tls.key, refreshIntervalMs: CERT_REFRESH_MS });
  const ca = tls.clientCa ? new grpc.experimental.FileWatcherCertificateProvider({ caCertificateFile: tls.clientCa, refreshIntervalMs: CERT_REFRESH_MS }) : null;
  const first = (add: (listener: (update: unknown) => void) => void, remove: (listener: (update: unknown) => void) => void) =>
    new Promise<void>((resolve) => {
      const listener = (update: unknown) => {
        if (update === null) return;
        remove(listener);
        resolve();
      };
      add(listener);
    });
  const loaded = Promise.all([
    first((l) => identity.addIdentityCertificateListener(l), (l) => identity.removeIdentityCertificateListener(l)),
    ca ? first((l) => ca.addCaCertificateListener(l), (l) => ca.removeCaCertificateListener(l)) : Promise.resolve(),
  ]).then(() => {});
  // grpc-js takes the identity provider first (whatever its parameter is called), then the CA.
  return { credentials: grpc.experimental.createCertificateProviderServerCredentials(identity, ca, ca !== null), loaded };
}

/** Node TLS options of an HTTPS listener, and a watcher that calls `onChange` with new ones. */
export function httpsOptions(tls: Config['tls']): { options: SecureContextOptions & { requestCert: boolean; rejectUnauthorized: boolean }; watch(onChange: (o: SecureContextOptions) => void): () => void } | undefined {
  if (!tls.cert || !tls.key) return undefined;
  const load = (): SecureContextOptions => ({
    cert: read(tls.cert!, '--tls-cert'),
    key: read(tls.key!, '--tls-key'),
    ...(tls.clientCa ? { ca: read(tls.clientCa, '--tls-client-ca') } : {}),
  });
  const files = [tls.cert, tls.key, ...(tls.clientCa ? [tls.clientCa] : [])];
  return {
    options: { ...load(), requestCert: tls.clientCa !== undefined, rejectUnauthorized: tls.clientCa !== undefined },
    watch(onChange) {
      const listener = () => {
        try {
          onChange(load());
        } catch {
          // Half-written files: the next change reloads.
        }
      };
      for (const f of files) watchFile(f, { interval: CERT_REFRESH_MS }, listener);
      return () => {
        for (const f of files) unwatchFile(f, listener);
      };
    },
  };
}

/** Channel credentials of our clients: TLS with `client.ca` (else the system roots) and a client certificate when configured. */
export function grpcChannelCredentials(tlsEnabled: boolean, client: Config['client']): grpc.ChannelCredentials {
  if (!tlsEnabled) return grpc.credentials.createInsecure();
  const ca = client.ca ? read(client.ca, 'client CA (--tls-ca)') : null;
  const key = client.key ? read(client.key, 'client key (--tls-client-key)') : null;
  const cert = client.cert ? read(client.cert, 'client certificate (--tls-client-cert)') : null;
  return grpc.credentials.createSsl(ca, key, cert);
}


/** An interceptor adding metadata to every call (the fleet token, a bearer token). */
export function metadataInterceptor(entries: Record<string, string>): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        for (const [k, v] of Object.entries(entries)) metadata.set(k, v);
        next(metadata, listener);
      },
    });
}

export { CLIENT_ENV, clientEnv, clientSettings, clientToken } from './client-settings.ts';
