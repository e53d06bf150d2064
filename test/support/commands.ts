// Where a command is: tests skip (saying why) when a tool they need is not installed.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The executable `cmd` would run (a path is checked as given), or undefined when there is none. */
export function findOnPath(cmd: string): string | undefined {
  const candidates = cmd.includes('/') ? [cmd] : (process.env['PATH'] ?? '').split(delimiter).map((d) => join(d, cmd));
  return candidates.find((p) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}
