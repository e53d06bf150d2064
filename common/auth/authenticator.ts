// Who is calling: from the client certificate (mTLS), a bearer token (`authorization: Bearer`, a
// static token or a JWT), the fleet token, or nobody. On a server that listens on loopback with
// no TLS and no credentials configured, nobody is the machine's own user, trusted with everything
// a local `--disk_cache` would allow: that is what makes a plain `npm start` usable by Bazel.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { PeerCertificate } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import { createLocalJWKSet, importSPKI, jwtVerify, type JWTVerifyGetKey } from 'jose';

type JwtKey = JWTVerifyGetKey | Awaited<ReturnType<typeof importSPKI>>;
import type { Config } from '../config.ts';
import { ReapiError, Status, wrap } from '../errors.ts';
import { PERMISSIONS, type Permission, type Principal } from './permissions.ts';

/** Metadata key carrying the fleet token from schedulers and workers to storage nodes. */
export const FLEET_TOKEN_HEADER = 'x-reapi-fleet-token';

const FLEET_PERMISSIONS: readonly Permission[] = ['cache-read', 'cache-write', 'execute', 'reports-read', 'worker'];

export const unauthenticated = (msg: string) => new ReapiError(Status.UNAUTHENTICATED, msg);

/** What a caller presents, from gRPC metadata or an HTTP request. */
export interface Presented {
  authorization?: string;
  fleetToken?: string;
  /** The verified client certificate (mTLS), if any. */
  certificate?: PeerCertificate;
}

export function presentedByCall(call: { metadata: grpc.Metadata; getAuthContext?: () => { sslPeerCertificate?: PeerCertificate } }): Presented {
  const first = (key: string) => {
    const v = call.metadata.get(key)[0];
    return typeof v === 'string' ? v : undefined;
  };
  const out: Presented = {};
  const authorization = first('authorization');
  if (authorization !== undefined) out.authorization = authorization;
  const fleetToken = first(FLEET_TOKEN_HEADER);
  if (fleetToken !== undefined) out.fleetToken = fleetToken;
  const cert = call.getAuthContext?.().sslPeerCertificate;
  if (cert && Object.keys(cert).length > 0) out.certificate = cert;
  return out;
}

const digest = (s: string) => createHash('sha256').update(s).digest();
const sameSecret = (a: string, b: string) => timingSafeEqual(digest(a), digest(b));

/** Static tokens: lines `PRINCIPAL TOKEN`; blank lines and `#` comments ignored. */
export function parseTokensFile(text: string, file: string): Array<{ principal: string; token: string }> {
  const out: Array<{ principal: string; token: string }> = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(\S{16,})$/.exec(line);
    if (!m) throw new Error(`${file}:${i + 1}: expected "PRINCIPAL TOKEN" (a token of at least 16 characters)`);
    out.push({ principal: m[1]!, token: m[2]! });
  }
  return out;
}

/** The name a client certificate stands for: its subject CN, else its first DNS or URI SAN. */
export function certificateName(cert: PeerCertificate): string | undefined {
  const cn = cert.subject?.CN;
  if (typeof cn === 'string' && cn) return cn;
  const san = /(?:DNS|URI):([^,\s]+)/.exec(cert.subjectaltname ?? '');
  return san?.[1];
}

export interface AuthSettings {
  /** Nothing configured and loopback only: callers without credentials are the local user. */
  trustLocalUser: boolean;
  /** Client certificates are required and verified by the TLS layer. */
  mtls: boolean;
}

export class Authenticator {
  private readonly principals: Map<string, { permissions: Set<Permission>; instances?: string[] }>;
  private readonly tokens: Array<{ principal: string; token: string }>;
  private readonly jwtKey: Promise<JwtKey> | undefined;

  constructor(
    private readonly config: Pick<Config, 'auth' | 'fleetToken'>,
    readonly settings: AuthSettings,
  ) {
    const { auth } = config;
    this.principals = new Map(auth.principals.map((p) => [p.name, { permissions: new Set(p.permissions), ...(p.instances ? { instances: p.instances } : {}) }]));
    this.tokens = [];
    if (auth.tokensFile) {
      let text: string;
      try {
        text = readFileSync(auth.tokensFile, 'utf8');
      } catch (err) {
        throw wrap(err, `auth.tokensFile: cannot read ${auth.tokensFile}`);
      }
      this.tokens = parseTokensFile(text, auth.tokensFile);
    }
    this.jwtKey = auth.jwt ? loadJwtKey(auth.jwt.keysFile) : undefined;
    this.jwtKey?.catch(() => {});
  }

  /** The caller's principal; UNAUTHENTICATED when it presented something invalid or nothing where something is needed. */
  async identify(presented: Presented): Promise<Principal> {
    const { authorization, fleetToken, certificate } = presented;
    if (authorization !== undefined) return this.fromBearer(authorization);
    if (fleetToken !== undefined) {
      if (this.config.fleetToken === undefined || !sameSecret(fleetToken, this.config.fleetToken)) throw unauthenticated('the fleet token presented is not this server\'s');
      return { name: 'fleet', via: 'fleet-token', permissions: new Set(FLEET_PERMISSIONS) };
    }
    if (certificate) {
      const name = certificateName(certificate);
      if (!name) throw unauthenticated('the client certificate names no subject CN or SAN to take as the principal');
      return this.named(name, 'mtls');
    }
    if (this.settings.trustLocalUser) {
      return { name: 'local-user', via: 'local-user', permissions: new Set(PERMISSIONS.filter((p) => p !== 'worker' && p !== 'admin')) };
    }
    return { name: 'anonymous', via: 'anonymous', permissions: new Set(this.config.auth.anonymous) };
  }

  private named(name: string, via: Principal['via']): Principal {
    const p = this.principals.get(name);
    return { name, via, permissions: p?.permissions ?? new Set(), ...(p?.instances ? { instances: p.instances } : {}) };
  }

  private async fromBearer(header: string): Promise<Principal> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw unauthenticated('the authorization header is not "Bearer TOKEN"');
    const token = m[1]!;
    const stat = this.tokens.find((t) => sameSecret(t.token, token));
    if (stat) return this.named(stat.principal, 'token');
    const jwt = this.config.auth.jwt;
    if (jwt && this.jwtKey && token.split('.').length === 3) {
      try {
        const key = await this.jwtKey;
        const { payload } = typeof key === 'function' ? await jwtVerify(token, key, { issuer: jwt.issuer, audience: jwt.audience }) : await jwtVerify(token, key, { issuer: jwt.issuer, audience: jwt.audience });
        const name = payload[jwt.principalClaim];
        if (typeof name !== 'string' || !name) throw new Error(`the token has no "${jwt.principalClaim}" claim`);
        return this.named(name, 'jwt');
      } catch (err) {
        throw unauthenticated(`the bearer token is not a valid JWT for this server: ${(err as Error).message}`);
      }
    }
    throw unauthenticated('the bearer token is not one this server knows');
  }
}

/** A PEM public key, or a JWKS (JSON `{"keys": [...]}`) for keys chosen by `kid`. */
async function loadJwtKey(file: string): Promise<JwtKey> {
  const text = readFileSync(file, 'utf8');
  if (text.trimStart().startsWith('{')) return createLocalJWKSet(JSON.parse(text) as Parameters<typeof createLocalJWKSet>[0]);
  const alg = /BEGIN PUBLIC KEY/.test(text) ? guessAlg(text) : undefined;
  if (!alg) throw new Error(`auth.jwt.keysFile ${file}: neither a JWKS nor a PEM public key`);
  return importSPKI(text, alg);
}

/** RS256 for RSA keys, ES256 for P-256, EdDSA for Ed25519 (what a PEM key alone can mean). */
function guessAlg(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  if (der.includes(Buffer.from([0x2b, 0x65, 0x70]))) return 'EdDSA';
  if (der.includes(Buffer.from([0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]))) return 'ES256';
  return 'RS256';
}
