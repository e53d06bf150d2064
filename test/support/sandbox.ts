// Whether this machine can run the bwrap sandbox: tests skip (saying why) only when it cannot.
import { findOnPath } from './commands.ts';

/** A skip reason for tests that run actions in the bwrap sandbox, or false when they can run. */
export const sandboxSkip: string | false = !findOnPath('bwrap')
  ? 'bwrap is not installed'
  : process.getuid?.() !== 0
    ? 'the bwrap sandbox needs root'
    : false;
