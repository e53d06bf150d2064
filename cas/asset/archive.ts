// FetchDirectory of an archive: a tar file (plain or gzip-compressed) becomes a Directory tree in
// the CAS, one entry at a time (only one file's content is held in memory). The tree is built
// from names alone, nothing is written to disk, so entries cannot escape anywhere; names that a
// Directory may not hold ("..", empty, absolute paths) are refused.
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';
import { ReapiError, Status } from '../../common/errors.ts';
import type { Digest } from '../../common/digest.ts';
import { encode, type MessageInput } from '../../protos/index.ts';
import { putBlob, readStream } from '../blob-io.ts';
import type { BlobStore } from '../blob-store.ts';

interface DirNode {
  files: Map<string, { digest: Digest; executable: boolean }>;
  dirs: Map<string, DirNode>;
  links: Map<string, string>;
}

const newDir = (): DirNode => ({ files: new Map(), dirs: new Map(), links: new Map() });
const byUtf8 = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

function components(name: string): string[] {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (name.startsWith('/') || parts.some((p) => p === '..' || p.includes('\0'))) {
    throw new ReapiError(Status.ABORTED, `archive entry "${name}" is absolute or leaves the archive ("..")`);
  }
  return parts;
}

/** Whether the file at `path` starts like a gzip or a tar file. */
export async function archiveKind(path: string): Promise<'tar' | 'tar.gz' | undefined> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'tar.gz';
    if (bytesRead >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
    return undefined;
  } finally {
    await fh.close();
  }
}

/** Unpack the archive at `path` into `blobs`; the root Directory's digest. */
export async function unpackArchive(path: string, kind: 'tar' | 'tar.gz', blobs: BlobStore): Promise<Digest> {
  const root = newDir();
  const dirAt = (parts: string[]): DirNode => {
    let d = root;
    for (const p of parts) {
      let next = d.dirs.get(p);
      if (!next) d.dirs.set(p, (next = newDir()));
      d = next;
    }
    return d;
  };
  const contents = new Map<string, { digest: Digest; executable: boolean }>();
  const tar = extract();
  tar.on('entry', (header, stream, next) => {
    void (async () => {
      const parts = components(header.name);
      const name = parts.pop();
      if (header.type === 'directory') {
        if (name !== undefined) dirAt([...parts, name]);
        stream.resume();
      } else if (name === undefined) {
        stream.resume();
      } else if (header.type === 'file' || header.type === 'contiguous-file') {
        const digest = await putBlob(blobs, await readStream(stream as AsyncIterable<Uint8Array>));
        const file = { digest, executable: ((header.mode ?? 0) & 0o111) !== 0 };
        dirAt(parts).files.set(name, file);
        contents.set([...parts, name].join('/'), file);
      } else if (header.type === 'symlink') {
        dirAt(parts).links.set(name, header.linkname ?? '');
        stream.resume();
      } else if (header.type === 'link') {
        const target = contents.get(components(header.linkname ?? '').join('/'));
        if (!target) throw new ReapiError(Status.ABORTED, `archive entry "${header.name}" is a hard link to "${header.linkname}", which comes nowhere before it`);
        dirAt(parts).files.set(name, target);
        stream.resume();
      } else {
        stream.resume(); // devices, FIFOs, pax headers: nothing a build input holds
      }
    })().then(() => next(), (err: unknown) => next(err as Error));
  });
  const source = createReadStream(path);
  try {
    if (kind === 'tar.gz') await pipeline(source, createGunzip(), tar);
    else await pipeline(source, tar);
  } catch (err) {
    if (err instanceof ReapiError) throw err;
    throw new ReapiError(Status.ABORTED, `the archive could not be read: ${(err as Error).message}`);
  }
  const store = async (d: DirNode): Promise<Digest> => {
    const message: MessageInput<'Directory'> = {};
    const files = [...d.files].sort(([a], [b]) => byUtf8(a, b)).map(([name, f]) => (f.executable ? { name, digest: f.digest, is_executable: true } : { name, digest: f.digest }));
    const dirs: Array<MessageInput<'DirectoryNode'>> = [];
    for (const [name, sub] of [...d.dirs].sort(([a], [b]) => byUtf8(a, b))) dirs.push({ name, digest: await store(sub) });
    const links = [...d.links].sort(([a], [b]) => byUtf8(a, b)).map(([name, target]) => ({ name, target }));
    if (files.length) message.files = files;
    if (dirs.length) message.directories = dirs;
    if (links.length) message.symlinks = links;
    return putBlob(blobs, encode('Directory', message));
  };
  return store(root);
}
