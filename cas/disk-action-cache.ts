// An ActionCache on the local filesystem: `ac/<instance>/<hash>-<size>` holds the encoded
// ActionResult, written to a temp file and renamed into place so readers never see half an entry.
// Entries of actions hashed with another digest function than SHA-256 carry its name before the
// hash (`blake3-<hash>-<size>`), so functions never share an entry.
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../common/digest.ts';
import { SHA256, type DigestFunction } from '../common/digest-function.ts';
import { dataLoss } from '../common/errors.ts';
import { decode, encode } from '../protos/index.ts';
import type { ActionCache, ActionResult, ActionResultInput } from './action-cache.ts';

export class DiskActionCache implements ActionCache {
  private readonly madeDirs = new Set<string>();

  private readonly prefix: string;

  constructor(
    private readonly root: string,
    fn: DigestFunction = SHA256,
  ) {
    this.prefix = fn === SHA256 ? '' : `${fn.resourceName}-`;
  }

  async get(instanceName: string, actionDigest: Digest): Promise<ActionResult | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readFile(this.pathOf(instanceName, actionDigest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return decode('ActionResult', bytes);
    } catch (err) {
      await this.remove(instanceName, actionDigest);
      throw dataLoss(`action cache entry ${actionDigest.hash} was unreadable and has been removed: ${(err as Error).message}`);
    }
  }

  async put(instanceName: string, actionDigest: Digest, result: ActionResultInput): Promise<void> {
    const dir = this.dirOf(instanceName);
    if (!this.madeDirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      this.madeDirs.add(dir);
    }
    const path = this.pathOf(instanceName, actionDigest);
    const tmp = `${path}.${randomUUID()}.tmp`;
    try {
      await writeFile(tmp, encode('ActionResult', result));
      await rename(tmp, path);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }

  async remove(instanceName: string, actionDigest: Digest): Promise<void> {
    await unlink(this.pathOf(instanceName, actionDigest)).catch(() => {});
  }

  private dirOf(instanceName: string): string {
    // Instance names may hold slashes; percent-encoding keeps one directory per instance.
    return join(this.root, `i_${encodeURIComponent(instanceName)}`);
  }

  private pathOf(instanceName: string, d: Digest): string {
    return join(this.dirOf(instanceName), `${this.prefix}${d.hash}-${d.size_bytes}`);
  }
}
