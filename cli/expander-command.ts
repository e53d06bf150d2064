// `reapi expander`: the persistent expander (clients/expander/) on a Unix socket, for the
// proc-macro shim of builds not run through `reapi cargo` (which starts its own). Expansions are
// shared through the ActionCache of --endpoint unless --local.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { addClientFlags, clientSettingsOf, type ClientFlags } from './client-flags.ts';
import { hostIsa } from '../common/host-isa.ts';
import { DEFAULT_EXPAND_TIMEOUT_SECONDS } from '../clients/expand-defaults.ts';

export interface ExpanderFlags extends ClientFlags {
  socket: string;
  endpoint: string;
  local?: boolean;
  instance: string;
  threads?: string;
  timeout: string;
  isa: string;
}

/** The socket `reapi expander` listens on unless --socket names one (the shim itself has no default). */
export function defaultExpanderSocket(): string {
  return join(process.env.XDG_RUNTIME_DIR || tmpdir(), `reapi-expander-${process.getuid?.() ?? 0}.sock`);
}

export function registerExpanderCommand(program: Command): void {
  addClientFlags(program.command('expander'))
    .description('serve wasm proc-macro expansions to the cargo shim over a Unix socket: in memory, from the ActionCache, else expanded here')
    .option('--socket <path>', 'the Unix socket to listen on (give it to the shim as REAPI_EXPANDER_SOCKET)', defaultExpanderSocket())
    .option('--endpoint <url>', 'the reapi whose ActionCache expansions are shared through', process.env.REAPI_ENDPOINT ?? 'grpc://127.0.0.1:8980')
    .option('--local', 'share nothing: expansions stay in this process')
    .option('--instance <name>', 'REAPI instance name', '')
    .option('--threads <n>', 'expansions at once (default: the CPU count)')
    .option('--timeout <seconds>', 'wall-clock limit of one expansion', String(DEFAULT_EXPAND_TIMEOUT_SECONDS))
    .option('--isa <isa>', 'ISA of the expansion actions, as `reapi expand --isa` (shared keys)', hostIsa())
    .action(async (flags: ExpanderFlags) => {
      const [{ startExpander }, { InProcessExpander }, { connectExec }] = await Promise.all([
        import('../clients/expander/expander-server.ts'),
        import('../execution/wasm/in-process-expander.ts'),
        import('../clients/remote-execution.ts'),
      ]);
      const expander = new InProcessExpander(flags.threads ? { threads: Number(flags.threads) } : {});
      const clients = flags.local
        ? undefined
        : connectExec(flags.endpoint, flags.instance, clientSettingsOf(flags));
      const running = await startExpander({
        socket: flags.socket,
        expander,
        ...(clients ? { clients } : {}),
        platform: flags.isa ? { ISA: flags.isa } : {},
        timeoutSeconds: Number(flags.timeout),
      });
      const stop = async () => {
        await running.close();
        clients?.close();
        await expander.close();
        process.exit(0);
      };
      process.once('SIGINT', () => void stop());
      process.once('SIGTERM', () => void stop());
      process.stdout.write(`reapi expander listening socket=${running.socket}\n`);
    });
}
