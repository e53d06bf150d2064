// Where a reapi server is: `host:port`, `grpc://host:port` or `grpcs://host:port` (TLS).

/**
 * Parse `host:port`, `grpc://host:port` or `grpcs://host:port` (TLS: trust from `client.ca`, else the system roots);
 * IPv6 hosts in brackets (`[::1]:8980`). The port is required.
 */
export function parseEndpoint(address: string): { target: string; tls: boolean } {
  const m = /^(?:(grpcs?):\/\/)?(\[[0-9a-fA-F:.]+\]|[^\s/:[\]]+):(\d{1,5})\/?$/.exec(address.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new Error(`address "${address}" is not HOST:PORT, grpc://HOST:PORT or grpcs://HOST:PORT`);
  }
  return { target: `${m[2]}:${port}`, tls: m[1] === 'grpcs' };
}

