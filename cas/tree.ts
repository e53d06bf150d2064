// Walking Directory trees stored in the CAS.
import type { Digest } from '../common/digest.ts';
import { digestKey } from '../common/digest.ts';
import { invalidArgument } from '../common/errors.ts';
import { decode, type MessageOutput } from '../protos/index.ts';
import type { BlobStore } from './blob-store.ts';
import { readBlob } from './blob-io.ts';

export type Directory = MessageOutput<'Directory'>;

export function decodeDirectory(bytes: Buffer, digest: Digest): Directory {
  try {
    return decode('Directory', bytes);
  } catch (err) {
    throw invalidArgument(`blob ${digestKey(digest)} is not a valid Directory message: ${(err as Error).message}`);
  }
}

/** Every file digest and directory digest named by a Tree message (an output directory). */
export function digestsInTree(tree: MessageOutput<'Tree'>): Digest[] {
  const out: Digest[] = [];
  for (const dir of [tree.root, ...tree.children]) {
    if (!dir) continue;
    for (const f of dir.files) if (f.digest) out.push(f.digest);
  }
  return out;
}

/**
 * Breadth-first walk from `root`, each distinct directory once. Missing directories are skipped
 * (reported through `onMissing`), as GetTree requires.
 */
export async function* walkTree(
  store: BlobStore,
  root: Digest,
  onMissing: (d: Digest) => void = () => {},
): AsyncGenerator<{ digest: Digest; directory: Directory }> {
  const seen = new Set<string>([digestKey(root)]);
  let level: Digest[] = [root];
  while (level.length > 0) {
    const next: Digest[] = [];
    const missing = new Set((await store.findMissing(level)).map(digestKey));
    for (const digest of level) {
      if (missing.has(digestKey(digest))) {
        onMissing(digest);
        continue;
      }
      const directory = decodeDirectory(await readBlob(store, digest), digest);
      yield { digest, directory };
      for (const child of directory.directories) {
        if (!child.digest) continue;
        const key = digestKey(child.digest);
        if (seen.has(key)) continue;
        seen.add(key);
        next.push(child.digest);
      }
    }
    level = next;
  }
}
