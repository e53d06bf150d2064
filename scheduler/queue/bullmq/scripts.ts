// The Lua scripts under scripts/, defined on a command connection as ioredis custom commands
// (EVALSHA, with an EVAL fallback). Every change of an operation bumps its `ver` and publishes
// the change itself on the events channel, as JSON {name, ver, stage, worker, updatedAt, done},
// so watchers see every stage even when they come faster than a watcher could re-read the hash.
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';

export type ScriptArg = string | number;

/** The scripts, as methods of the command connection: keys first, then ARGV. */
export interface ScriptCommands {
  submitOp(...keysAndArgs: ScriptArg[]): Promise<[string, number]>;
  deliverJob(...keysAndArgs: ScriptArg[]): Promise<(string | number)[]>;
  updateOp(...keysAndArgs: ScriptArg[]): Promise<number>;
  finishOp(...keysAndArgs: ScriptArg[]): Promise<number>;
  requeueOp(...keysAndArgs: ScriptArg[]): Promise<number>;
}

export type CommandClient = Redis & ScriptCommands;

const SCRIPTS: Record<keyof ScriptCommands, { numberOfKeys: number; file: string }> = {
  submitOp: { numberOfKeys: 4, file: 'submit-op.lua' },
  deliverJob: { numberOfKeys: 1, file: 'deliver-job.lua' },
  updateOp: { numberOfKeys: 1, file: 'update-op.lua' },
  finishOp: { numberOfKeys: 1, file: 'finish-op.lua' },
  requeueOp: { numberOfKeys: 1, file: 'requeue-op.lua' },
};

/** Define the scripts on `redis`, which then is a CommandClient. */
export function withScripts(redis: Redis): CommandClient {
  for (const [name, def] of Object.entries(SCRIPTS)) {
    redis.defineCommand(name, { numberOfKeys: def.numberOfKeys, lua: readFileSync(new URL(`./scripts/${def.file}`, import.meta.url), 'utf8') });
  }
  return redis as CommandClient;
}
