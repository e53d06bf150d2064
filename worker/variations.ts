// What the second run of a verified action varies: things a correct action must not observe
// (see the README, "Determinism"). Never anything that is part of the action key: argv, the
// Command's environment, the input root and the platform stay exactly the same.
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { Variation } from '../execution/runner.ts';

export interface VariationSettings {
  /** Run the second execution under libfaketime (dynamic binaries only). */
  faketime: boolean;
  /** Serve the second run's exec root through disorderfs with shuffled directory order. */
  directoryOrder: boolean;
}

export interface PlannedVariation {
  variation: Variation;
  /** Copy inputs instead of hardlinking them (different inode identity). */
  copyInputs: boolean;
  /** Mount the exec root through disorderfs for this run. */
  shuffleDirectories: boolean;
  /** What was varied, for reports. */
  described: string[];
}

/** Host facilities some variations need, found once per worker. */
export interface VariationSupport {
  /** A second locale to switch to (e.g. en_US.UTF-8), when one is installed. */
  locale?: string;
  /** Path of libfaketime.so.1, when installed. */
  faketime?: string;
  /** Path of the disorderfs binary, when installed. */
  disorderfs?: string;
}

const FAKETIME_LIBS = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1'];

export async function detectVariationSupport(): Promise<VariationSupport> {
  const support: VariationSupport = {};
  try {
    const { stdout } = await promisify(execFile)('locale', ['-a']);
    const locales = stdout.split('\n').map((l) => l.trim());
    if (locales.includes('en_US.utf8') || locales.includes('en_US.UTF-8')) support.locale = 'en_US.UTF-8';
  } catch {
    // no `locale`: the locale variation is skipped
  }
  for (const lib of FAKETIME_LIBS) {
    if (await access(lib).then(() => true, () => false)) {
      support.faketime = lib;
      break;
    }
  }
  for (const bin of ['/usr/bin/disorderfs', '/bin/disorderfs']) {
    if (await access(bin).then(() => true, () => false)) {
      support.disorderfs = bin;
      break;
    }
  }
  return support;
}

/** The variation of a verification run, given the Command's environment. */
export function verificationVariation(env: Record<string, string>, settings: VariationSettings, support: VariationSupport): PlannedVariation {
  const tag = randomBytes(4).toString('hex');
  const variation: Variation = {
    execRootMount: `/build-${tag}/exec`,
    hostname: `verify-${tag}`,
    umask: 0o077,
    uid: 4242,
    gid: 4242,
    disableAslr: true,
    cpus: 1,
  };
  const described = ['exec root path', 'hostname', 'umask 077', 'uid', 'ASLR off', '1 CPU', 'copied inputs'];
  if (!('TZ' in env)) {
    variation.tz = 'Pacific/Kiritimati';
    described.push('TZ');
  }
  if (support.locale && !('LANG' in env) && !('LC_ALL' in env)) {
    variation.locale = support.locale;
    described.push('locale');
  }
  if (settings.faketime && support.faketime && !('LD_PRELOAD' in env)) {
    // A clock far in the future that keeps ticking.
    variation.extraEnv = { LD_PRELOAD: support.faketime, FAKETIME: '+3650d' };
    described.push('wall clock (libfaketime)');
  }
  const shuffleDirectories = settings.directoryOrder && support.disorderfs !== undefined;
  if (shuffleDirectories) described.push('directory order (disorderfs)');
  return { variation, copyInputs: true, shuffleDirectories, described };
}
