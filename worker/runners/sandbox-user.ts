// The dedicated non-root host account actions run as, and the tiny /etc files the sandbox sees.
//
// bwrap started by root keeps full capabilities, so the runner drops to this account (setpriv)
// before bwrap starts. The account owns nothing on the host; it only needs to read the toolchain
// (/usr) and write the exec root's directories.

import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface SandboxUser {
  name: string;
  uid: number;
  gid: number;
  /** How the account was obtained, for logs. */
  source: 'existing' | 'created' | 'fallback';
}

/** Kernel overflow ids: how unmapped owners (e.g. root-owned /usr) appear inside a user namespace. */
export const OVERFLOW_ID = 65534;

async function lookup(name: string): Promise<{ uid: number; gid: number } | undefined> {
  try {
    const { stdout } = await execFileAsync('getent', ['passwd', name]);
    const fields = stdout.trim().split(':');
    const uid = Number(fields[2]);
    const gid = Number(fields[3]);
    if (Number.isInteger(uid) && Number.isInteger(gid)) return { uid, gid };
  } catch {
    // getent exits 2 when the name is unknown.
  }
  return undefined;
}

/**
 * Finds `name`, creating it as a system account without a home directory when running as root.
 * If it neither exists nor can be created, falls back to `fallback` (default 65534, i.e.
 * nobody/nogroup on Debian): still non-root and capability-free, but shared with other daemons.
 */
export async function ensureSandboxUser(
  name: string,
  opts: { create: boolean; fallback: { uid: number; gid: number } },
): Promise<SandboxUser> {
  const found = await lookup(name);
  if (found) return { name, ...found, source: 'existing' };
  if (opts.create && process.getuid?.() === 0) {
    try {
      await execFileAsync('useradd', [
        '--system',
        '--no-create-home',
        '--home-dir',
        '/nonexistent',
        '--shell',
        '/usr/sbin/nologin',
        '--user-group',
        name,
      ]);
    } catch {
      // Another worker may have created it concurrently; the lookup below decides.
    }
    const created = await lookup(name);
    if (created) return { name, ...created, source: 'created' };
  }
  return { name, ...opts.fallback, source: 'fallback' };
}

/**
 * Generated /etc files, per (uid, gid) seen inside the sandbox. Only the sandbox user and the
 * kernel's overflow ids appear in passwd/group; the host's accounts (and root's shadow) never do.
 * Written once into a private 0755 directory (the unprivileged bwrap must be able to read them)
 * and bound read-only.
 */
export class EtcFiles {
  private dir: Promise<string> | undefined;
  private readonly made = new Map<string, Promise<string>>();

  constructor(private readonly parent: string = tmpdir()) {}

  /** Returns the directory holding passwd, group, hosts and nsswitch.conf for this identity. */
  forIdentity(name: string, uid: number, gid: number, hostname: string): Promise<string> {
    const key = `${uid}-${gid}-${hostname}`;
    let p = this.made.get(key);
    if (!p) {
      p = this.write(key, name, uid, gid, hostname);
      p.catch(() => this.made.delete(key));
      this.made.set(key, p);
    }
    return p;
  }

  /** Removes the generated files (call when the runner is discarded). */
  async dispose(): Promise<void> {
    const dir = this.dir;
    this.dir = undefined;
    this.made.clear();
    const path = await dir?.catch(() => undefined);
    if (path) await rm(path, { recursive: true, force: true });
  }

  private async write(key: string, name: string, uid: number, gid: number, hostname: string): Promise<string> {
    this.dir ??= mkdtemp(join(this.parent, 'reapi-bwrap-etc-')).then(async (d) => {
      await chmod(d, 0o755);
      return d;
    });
    const dir = join(await this.dir, key);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await chmod(dir, 0o755);
    const safe = name.replace(/[:\n]/g, '_');
    const passwd = [`${safe}:x:${uid}:${gid}:reapi sandbox:/tmp:/usr/sbin/nologin`];
    const group = [`${safe}:x:${gid}:`];
    if (uid !== OVERFLOW_ID) passwd.push(`nobody:x:${OVERFLOW_ID}:${OVERFLOW_ID}:nobody:/nonexistent:/usr/sbin/nologin`);
    if (gid !== OVERFLOW_ID) group.push(`nogroup:x:${OVERFLOW_ID}:`);
    const names = hostname === 'localhost' ? 'localhost' : `localhost ${hostname}`;
    const hosts = `127.0.0.1\t${names}\n::1\tlocalhost ip6-localhost ip6-loopback\n`;
    // files only: no DNS lookups at all (there is no network), so failures are immediate.
    const nsswitch = 'passwd: files\ngroup: files\nhosts: files\n';
    const files: Array<[string, string]> = [
      ['passwd', passwd.join('\n') + '\n'],
      ['group', group.join('\n') + '\n'],
      ['hosts', hosts],
      ['nsswitch.conf', nsswitch],
    ];
    for (const [file, text] of files) await writeFile(join(dir, file), text, { mode: 0o644 });
    return dir;
  }
}
