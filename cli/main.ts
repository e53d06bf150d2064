// The `reapi` command: parses flags, builds the pieces from config, starts them.
import { Command } from 'commander';
import { ConfigError } from '../common/config.ts';
import { createLogger } from '../common/logger.ts';
import { startStorageNode } from '../cas/storage-node.ts';
import { addCommonFlags, configFromFlags, type CommonFlags } from './flags.ts';

const program = new Command('reapi')
  .description('REAPI v2 remote cache and remote execution for Bazel and Buck2')
  .showHelpAfterError();

async function runStorage(role: string, flags: CommonFlags): Promise<void> {
  const config = configFromFlags(flags);
  const logger = createLogger(config.logLevel).child({ role });
  const node = await startStorageNode(config, logger);
  const stop = async (signal: string) => {
    logger.info({ signal }, 'shutting down');
    await node.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  // A machine-readable line for scripts and tests that start us on port 0.
  process.stdout.write(`reapi ${role} listening grpc=${node.grpcPort} http=${node.httpPort}\n`);
}

addCommonFlags(
  program.command('serve').description('everything on one machine: storage (CAS, ActionCache, ByteStream), and execution when enabled'),
).action((flags: CommonFlags) => runStorage('serve', flags));

addCommonFlags(program.command('cas').description('a storage node: CAS, ActionCache, ByteStream, Capabilities')).action(
  (flags: CommonFlags) => runStorage('cas', flags),
);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`reapi: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`reapi: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
}
