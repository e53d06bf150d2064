// `reapi expand`: one wasm proc-macro expansion through the fleet. Tokens on stdin, the expansion
// on stdout; errors on stderr with a non-zero exit (101 when the macro panicked).
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parseEndpoint } from '../common/endpoint.ts';
import { messageOf } from '../common/error-text.ts';
import { addClientFlags, clientSettingsOf, type ClientFlags } from './client-flags.ts';
import { hostIsa } from '../common/host-isa.ts';
import { DEFAULT_EXPAND_TIMEOUT_SECONDS } from '../clients/expand-defaults.ts';

export interface ExpandFlags extends ClientFlags {
  endpoint: string;
  module: string;
  entry: string;
  attr?: string;
  instance: string;
  timeout: string;
  isa: string;
  verbose?: boolean;
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function runExpand(flags: ExpandFlags): Promise<number> {
  const fail = (message: string, code = 1): number => {
    process.stderr.write(`reapi expand: ${message.trimEnd()}\n`);
    return code;
  };
  try {
    parseEndpoint(flags.endpoint);
  } catch (err) {
    return fail(messageOf(err), 2);
  }
  const timeoutSeconds = Number(flags.timeout);
  if (!(timeoutSeconds > 0)) return fail(`--timeout ${flags.timeout} is not a positive number of seconds`, 2);
  let module: Buffer;
  let attr: Buffer | undefined;
  try {
    module = await readFile(flags.module);
    if (flags.attr !== undefined) attr = await readFile(flags.attr);
  } catch (err) {
    return fail((err as Error).message, 2);
  }
  const input = await readStdin();
  // The gRPC client loads only now: argument errors and --help never wait for it.
  const [{ ExpandError, expand }, { connectExec }] = await Promise.all([import('../clients/expand-client.ts'), import('../clients/remote-execution.ts')]);
  const c = connectExec(flags.endpoint, flags.instance, clientSettingsOf(flags));
  try {
    const platform: Record<string, string> = flags.isa ? { ISA: flags.isa } : {};
    const started = performance.now();
    const res = await expand(c, { module, entry: flags.entry, input, ...(attr ? { attr } : {}), timeoutSeconds, platform });
    process.stdout.write(res.output);
    if (flags.verbose) {
      const ms = (performance.now() - started).toFixed(1);
      process.stderr.write(`reapi expand: ${res.cached ? 'cache hit' : 'executed'} in ${ms} ms (action ${res.actionDigest.hash}/${res.actionDigest.size_bytes})\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof ExpandError) return fail(err.message, err.exitCode === 101 ? 101 : 1);
    return fail((err as Error).message);
  } finally {
    c.close();
  }
}

export function registerExpandCommand(program: Command): void {
  addClientFlags(program.command('expand'))
    .description('expand a wasm proc macro through the fleet: tokens on stdin, expansion on stdout (cached by content)')
    .option('--endpoint <url>', 'grpc://HOST:PORT or grpcs://HOST:PORT of reapi serve or a scheduler', process.env.REAPI_ENDPOINT ?? 'grpc://127.0.0.1:8980')
    .requiredOption('--module <file>', 'the macro compiled to wasm')
    .requiredOption('--entry <name>', 'the exported macro function')
    .option('--attr <file>', "an attribute macro's attribute tokens (stdin is then the item)")
    .option('--instance <name>', 'REAPI instance name', '')
    .option('--timeout <seconds>', 'wall-clock limit of the expansion', String(DEFAULT_EXPAND_TIMEOUT_SECONDS))
    .option('--isa <isa>', "pin the workers' ISA (NaN bit patterns differ between architectures); '' for any", hostIsa())
    .option('--verbose', 'say on stderr whether it was a cache hit, and how long it took')
    .action(async (flags: ExpandFlags) => {
      process.exitCode = await runExpand(flags);
    });
}
