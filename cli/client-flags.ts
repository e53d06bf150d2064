// The TLS and credential flags of the client commands (cargo, expand, expander, reports), which
// fall back to the REAPI_TLS_* and REAPI_TOKEN_FILE environment, and the settings they make.
import type { Command } from 'commander';
import type { Config } from '../common/config.ts';
import { clientSettings } from '../common/client-settings.ts';

export interface ClientFlags {
  tlsCa?: string;
  tlsClientCert?: string;
  tlsClientKey?: string;
  tokenFile?: string;
}

/** `server` names what --tls-ca verifies, e.g. "a grpcs:// endpoint". */
export function addClientFlags(cmd: Command, server = 'a grpcs:// endpoint'): Command {
  return cmd
    .option('--tls-ca <file>', `PEM CA to verify ${server} with (default $REAPI_TLS_CA, else the system roots)`)
    .option('--tls-client-cert <file>', 'PEM client certificate (mTLS; default $REAPI_TLS_CLIENT_CERT)')
    .option('--tls-client-key <file>', 'its PEM key (default $REAPI_TLS_CLIENT_KEY)')
    .option('--token-file <file>', 'file holding the bearer token to send (default $REAPI_TOKEN_FILE)');
}

export function clientSettingsOf(flags: ClientFlags): Config['client'] {
  return clientSettings({ ca: flags.tlsCa, cert: flags.tlsClientCert, key: flags.tlsClientKey, tokenFile: flags.tokenFile });
}
