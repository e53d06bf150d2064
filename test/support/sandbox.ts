// Whether this machine can run the bwrap sandbox: tests skip (saying why) only when it cannot.
import { execFileSync } from 'node:child_process';

function hasBwrap(): boolean {
  try {
    execFileSync('bwrap', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A skip reason for tests that run actions in the bwrap sandbox, or false when they can run. */
export const sandboxSkip: string | false = !hasBwrap()
  ? 'bwrap is not installed'
  : process.getuid?.() !== 0
    ? 'the bwrap sandbox needs root'
    : false;
