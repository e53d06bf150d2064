// The door of every gRPC call and HTTP route: identify the caller, check the permission the method
// needs and the instance name it names, and remember the principal for the handler. Denials are
// UNAUTHENTICATED (nothing valid presented) or PERMISSION_DENIED naming the missing permission.
import type * as grpc from '@grpc/grpc-js';
import { permissionDenied } from '../errors.ts';
import { presentedByCall, unauthenticated, type Authenticator, type Presented } from './authenticator.ts';
import { instanceOfRequest, may, mayUseInstance, METHOD_PERMISSIONS, type Permission, type Principal } from './permissions.ts';

const principals = new WeakMap<object, Principal>();

/** The principal a call was admitted as (undefined on a server without a guard). */
export function principalOf(call: object): Principal | undefined {
  return principals.get(call);
}

function describe(p: Principal): string {
  return p.via === 'anonymous' ? 'an anonymous caller' : `principal "${p.name}" (${p.via})`;
}

export class CallGuard {
  constructor(readonly authenticator: Authenticator) {}

  /** Admit a gRPC call to `service.method` (with its request when there is one at the start). */
  async admit(service: string, method: string, call: { metadata: grpc.Metadata; getAuthContext?: () => { sslPeerCertificate?: import('node:tls').PeerCertificate } }, request?: unknown): Promise<Principal> {
    const principal = await this.check(presentedByCall(call), METHOD_PERMISSIONS[`${service}.${method}`], `${service}.${method}`);
    const instance = request === undefined ? undefined : instanceOfRequest(request);
    if (instance !== undefined) this.checkInstance(principal, instance, `${service}.${method}`);
    principals.set(call, principal);
    return principal;
  }

  /** Identify and check one permission (undefined: an identity is enough). */
  async check(presented: Presented, permission: Permission | undefined, what: string): Promise<Principal> {
    const p = await this.authenticator.identify(presented);
    if (p.via === 'anonymous' && (permission === undefined ? p.permissions.size === 0 : !may(p, permission))) {
      throw unauthenticated(`${what} needs credentials on this server (a client certificate or an authorization: Bearer token)${permission ? `: anonymous callers lack the permission "${permission}"` : ''}`);
    }
    if (permission !== undefined && !may(p, permission)) throw permissionDenied(`${describe(p)} lacks the permission "${permission}" that ${what} needs`);
    return p;
  }

  /** A principal limited to instance-name prefixes may use only those. */
  checkInstance(p: Principal, instance: string, what: string): void {
    if (!mayUseInstance(p, instance)) throw permissionDenied(`${describe(p)} may not use instance "${instance}" (${what}); it is limited to ${p.instances!.map((i) => `"${i}"`).join(', ')}`);
  }
}
