// An ActionCache in process memory (entries stored encoded, as on disk).
import { digestKey, type Digest } from '../common/digest.ts';
import { decode, encode } from '../protos/index.ts';
import type { ActionCache, ActionResult, ActionResultInput } from './action-cache.ts';

export class MemoryActionCache implements ActionCache {
  private readonly entries = new Map<string, Buffer>();

  async get(instanceName: string, actionDigest: Digest): Promise<ActionResult | undefined> {
    const bytes = this.entries.get(`${instanceName}\0${digestKey(actionDigest)}`);
    return bytes ? decode('ActionResult', bytes) : undefined;
  }

  async put(instanceName: string, actionDigest: Digest, result: ActionResultInput): Promise<void> {
    this.entries.set(`${instanceName}\0${digestKey(actionDigest)}`, encode('ActionResult', result));
  }

  async remove(instanceName: string, actionDigest: Digest): Promise<void> {
    this.entries.delete(`${instanceName}\0${digestKey(actionDigest)}`);
  }
}
