// The `reapi` command: parses flags, builds the pieces from config, starts them.
import { Command } from 'commander';
import { ConfigError, type Config } from '../common/config.ts';
import { createLogger, type Logger } from '../common/logger.ts';
import { addCommonFlags, addExecutionFlags, configFromFlags, type CommonFlags } from './flags.ts';
import { printReports, type ReportsFlags } from './reports-command.ts';
import { registerCargoCommands } from './cargo-command.ts';
import { registerExpandCommand } from './expand-command.ts';
import { registerExpanderCommand } from './expander-command.ts';
import { addClientFlags } from './client-flags.ts';
import { registerMacroCommand } from './macro-command.ts';
import type { RunningRole } from './roles.ts';

type Roles = typeof import('./roles.ts');
type Starter = (roles: Roles, config: Config, logger: Logger) => Promise<RunningRole>;

const program = new Command('reapi')
  .description('REAPI v2 remote cache and remote execution for Bazel and Buck2')
  .showHelpAfterError();

async function run(role: string, start: Starter, flags: CommonFlags): Promise<void> {
  const config = configFromFlags(flags, role);
  const logger = createLogger(config.logLevel).child({ role });
  // The server roles load lazily: client commands (cargo, expand) start without them.
  const running = await start(await import('./roles.ts'), config, logger);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await running.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  // A machine-readable line for scripts and tests that start us on port 0.
  process.stdout.write(`reapi ${role} listening grpc=${running.grpcPort} http=${running.httpPort}\n`);
}

addExecutionFlags(
  addCommonFlags(program.command('serve').description('everything on one machine: storage, scheduler and a local bwrap worker')),
  { storageNodes: false },
)
  .option('--no-execution', 'storage only (a remote cache): no scheduler, no worker')
  .action((flags: CommonFlags) => run('serve', (r, c, l) => r.startServe(c, l), flags));

addCommonFlags(program.command('cas').description('a storage node: CAS, ActionCache, ByteStream, Capabilities')).action(
  (flags: CommonFlags) => run('cas', (r, c, l) => r.startCas(c, l), flags),
);

addExecutionFlags(
  addCommonFlags(program.command('scheduler').description('the front door for clients: Execution, Operations, and storage forwarded to --cas nodes')),
  { storageNodes: true },
).action((flags: CommonFlags) => run('scheduler', (r, c, l) => r.startScheduler(c, l), flags));

addExecutionFlags(
  addCommonFlags(program.command('worker').description('takes jobs from Redis and runs them in bwrap sandboxes')),
  { storageNodes: true },
).action((flags: CommonFlags) => run('worker', (r, c, l) => r.startWorkerRole(c, l), flags));

addClientFlags(program.command('reports'), 'an https:// server')
  .description('list nondeterminism and cache-poisoning reports of a running server, newest first')
  .option('--http <url>', 'the server HTTP address (https:// with TLS)', 'http://127.0.0.1:8981')
  .option('--json', 'print JSON')
  .option('--target <label>', 'only reports for this target')
  .option('--mnemonic <mnemonic>', 'only reports for this mnemonic')
  .option('--kind <kind>', 'nondeterministic or cache-poisoning')
  .option('--limit <n>', 'at most this many', '100')
  .action((flags: ReportsFlags) => printReports(flags));

registerExpandCommand(program);
registerExpanderCommand(program);
registerMacroCommand(program);
registerCargoCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`reapi: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`reapi: ${(err as Error).message}\n`);
  process.exit(1);
}
