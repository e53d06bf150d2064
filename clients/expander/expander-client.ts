// A client of the persistent expander's wire format (clients/expander/expander-server.ts), as the
// Rust shim speaks it: one connection, requests one after another. For tools, tests and benchmarks.
import { connect, type Socket } from 'node:net';

export type ExpanderAnswer = { ok: true; output: string } | { ok: false; message: string };

export class ExpanderClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiting?: () => void;
  private closed = false;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiting?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.waiting?.();
    });
    sock.on('error', () => {});
  }

  static connect(socketPath: string): Promise<ExpanderClient> {
    return new Promise((resolve, reject) => {
      const s = connect(socketPath, () => resolve(new ExpanderClient(s)));
      s.once('error', reject);
    });
  }

  /** Send raw bytes (tests of malformed requests). */
  sendRaw(raw: Buffer | string): void {
    this.sock.write(raw);
  }

  async expand(modulePath: string, entry: string, input: string, attr?: string): Promise<ExpanderAnswer> {
    const path = Buffer.from(modulePath);
    const tokens = Buffer.from(input);
    const a = attr === undefined ? undefined : Buffer.from(attr);
    this.sendRaw(Buffer.concat([Buffer.from(`expand ${entry} ${path.length} ${tokens.length} ${a ? a.length : -1}\n`), path, tokens, ...(a ? [a] : [])]));
    return this.answer();
  }

  /** The next answer on the connection. */
  async answer(): Promise<ExpanderAnswer> {
    for (;;) {
      const nl = this.buf.indexOf(0x0a);
      if (nl >= 0) {
        const [kind, len] = this.buf.subarray(0, nl).toString().split(' ');
        const end = nl + 1 + Number(len);
        if (this.buf.length >= end) {
          const text = this.buf.subarray(nl + 1, end).toString();
          this.buf = this.buf.subarray(end);
          return kind === 'ok' ? { ok: true, output: text } : { ok: false, message: text };
        }
      }
      if (this.closed) throw new Error('the expander closed the connection');
      await new Promise<void>((r) => (this.waiting = r));
      this.waiting = undefined;
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
