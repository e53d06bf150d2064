// One structured logger (pino) for every role; JSON lines on stderr so stdout stays free for
// commands that print results.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = process.env.REAPI_LOG_LEVEL ?? 'info', name = 'reapi'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: false }));
}

/** A logger that drops everything: for unit tests of one layer. */
export const silentLogger: Logger = pino({ level: 'silent' });
