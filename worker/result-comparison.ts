// Comparing two executions of one action: exit code, stdout, stderr and every output, down to the
// file inside an output directory, with a short diff of what differs.
import { readBlob } from '../cas/blob-io.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import { digestKey, type Digest } from '../common/digest.ts';
import { decode, encode, type MessageInput, type MessageOutput } from '../protos/index.ts';
import type { Difference } from '../execution/report-store.ts';

type ResultLike = MessageInput<'ActionResult'> | MessageOutput<'ActionResult'>;

/** Largest blob read to describe a difference; larger ones are reported by digest only. */
const MAX_DIFF_BYTES = 16 * 1024 * 1024;
const SHOW = 120;

function isText(b: Buffer): boolean {
  if (b.includes(0)) return false;
  return Buffer.from(b.toString('utf8'), 'utf8').equals(b);
}

function clip(s: string): string {
  return JSON.stringify(s.length > SHOW ? s.slice(0, SHOW) + '…' : s);
}

/** The first difference between two buffers, for people. */
export function describeDifference(a: Buffer, b: Buffer): string {
  if (isText(a) && isText(b)) {
    const la = a.toString('utf8').split('\n');
    const lb = b.toString('utf8').split('\n');
    for (let i = 0; i < Math.max(la.length, lb.length); i++) {
      if (la[i] !== lb[i]) {
        return `line ${i + 1}: ${la[i] === undefined ? '(end of output)' : clip(la[i]!)} vs ${lb[i] === undefined ? '(end of output)' : clip(lb[i]!)}`;
      }
    }
    return 'same text';
  }
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  if (i === n) return `first ${n} bytes equal; sizes ${a.length} vs ${b.length}`;
  const around = (x: Buffer) => x.subarray(i, i + 16).toString('hex');
  return `byte offset ${i}: ${around(a)} vs ${around(b)} (sizes ${a.length} vs ${b.length})`;
}

async function blobDifference(blobs: BlobStore, a: Digest | null | undefined, b: Digest | null | undefined): Promise<string> {
  if (!a || !b) return `${a ? digestKey(a) : 'absent'} vs ${b ? digestKey(b) : 'absent'}`;
  if (a.size_bytes > MAX_DIFF_BYTES || b.size_bytes > MAX_DIFF_BYTES) {
    return `digest ${digestKey(a)} vs ${digestKey(b)}`;
  }
  try {
    return describeDifference(await readBlob(blobs, a), await readBlob(blobs, b));
  } catch {
    return `digest ${digestKey(a)} vs ${digestKey(b)}`;
  }
}

const same = (a: Digest | null | undefined, b: Digest | null | undefined) =>
  (a?.hash ?? '') === (b?.hash ?? '') && Number(a?.size_bytes ?? 0) === Number(b?.size_bytes ?? 0);

// The empty blob counts as absent: workers leave an empty stdout/stderr out, other writers (a
// client's UpdateActionResult) name the empty digest; both mean "no bytes".
const asDigest = (d: { hash?: string; size_bytes?: number | string | unknown } | null | undefined): Digest | undefined =>
  d && d.hash && Number(d.size_bytes ?? 0) > 0 ? { hash: d.hash, size_bytes: Number(d.size_bytes) } : undefined;

/** Every file of a Tree by path relative to the tree root (with its digest, or a symlink target). */
async function treeEntries(blobs: BlobStore, treeDigest: Digest): Promise<Map<string, string>> {
  const tree = decode('Tree', await readBlob(blobs, treeDigest));
  const byDigest = new Map(tree.children.map((c) => [blobs.digestFunction.hash(encode('Directory', c)), c]));
  const out = new Map<string, string>();
  const walk = (dir: MessageOutput<'Directory'>, prefix: string) => {
    for (const f of dir.files) out.set(prefix + f.name, `${f.digest ? digestKey(f.digest) : ''}${f.is_executable ? ' x' : ''}`);
    for (const s of dir.symlinks) out.set(prefix + s.name, `-> ${s.target}`);
    for (const d of dir.directories) {
      const child = d.digest ? byDigest.get(d.digest.hash) : undefined;
      if (child) walk(child, `${prefix}${d.name}/`);
    }
  };
  if (tree.root) walk(tree.root, '');
  return out;
}

/**
 * What differs between two results of the same action (empty when they agree). Blobs are read
 * from `blobs` only to describe differences.
 */
export async function compareResults(blobs: BlobStore, a: ResultLike, b: ResultLike): Promise<Difference[]> {
  const diffs: Difference[] = [];
  if ((a.exit_code ?? 0) !== (b.exit_code ?? 0)) diffs.push({ what: 'exit code', detail: `${a.exit_code ?? 0} vs ${b.exit_code ?? 0}` });
  for (const stream of ['stdout', 'stderr'] as const) {
    const da = asDigest(a[`${stream}_digest`]);
    const db = asDigest(b[`${stream}_digest`]);
    if (!same(da, db)) diffs.push({ what: stream, detail: await blobDifference(blobs, da, db) });
  }

  const files = (r: ResultLike) => new Map((r.output_files ?? []).map((f) => [f.path ?? '', f]));
  const fa = files(a);
  const fb = files(b);
  for (const path of new Set([...fa.keys(), ...fb.keys()])) {
    const x = fa.get(path);
    const y = fb.get(path);
    if (!x || !y) {
      diffs.push({ what: path, detail: x ? 'produced only by the first run' : 'produced only by the second run' });
    } else if (!same(asDigest(x.digest), asDigest(y.digest))) {
      diffs.push({ what: path, detail: await blobDifference(blobs, asDigest(x.digest), asDigest(y.digest)) });
    } else if (Boolean(x.is_executable) !== Boolean(y.is_executable)) {
      diffs.push({ what: path, detail: `executable ${Boolean(x.is_executable)} vs ${Boolean(y.is_executable)}` });
    }
  }

  const symlinks = (r: ResultLike) =>
    new Map(
      [...(r.output_symlinks ?? []), ...(r.output_file_symlinks ?? []), ...(r.output_directory_symlinks ?? [])].map((s) => [s.path ?? '', s.target ?? '']),
    );
  const sa = symlinks(a);
  const sb = symlinks(b);
  for (const path of new Set([...sa.keys(), ...sb.keys()])) {
    if (sa.get(path) !== sb.get(path)) diffs.push({ what: path, detail: `symlink ${clip(sa.get(path) ?? '(absent)')} vs ${clip(sb.get(path) ?? '(absent)')}` });
  }

  const dirs = (r: ResultLike) => new Map((r.output_directories ?? []).map((d) => [d.path ?? '', asDigest(d.tree_digest)]));
  const da = dirs(a);
  const db = dirs(b);
  for (const path of new Set([...da.keys(), ...db.keys()])) {
    const x = da.get(path);
    const y = db.get(path);
    if (same(x, y)) continue;
    if (!x || !y) {
      diffs.push({ what: path + '/', detail: x ? 'produced only by the first run' : 'produced only by the second run' });
      continue;
    }
    let ea: Map<string, string>;
    let eb: Map<string, string>;
    try {
      [ea, eb] = await Promise.all([treeEntries(blobs, x), treeEntries(blobs, y)]);
    } catch {
      diffs.push({ what: path + '/', detail: `tree ${digestKey(x)} vs ${digestKey(y)}` });
      continue;
    }
    for (const name of new Set([...ea.keys(), ...eb.keys()])) {
      const ex = ea.get(name);
      const ey = eb.get(name);
      if (ex === ey) continue;
      const what = `${path}/${name}`;
      if (ex === undefined || ey === undefined) {
        diffs.push({ what, detail: ex ? 'produced only by the first run' : 'produced only by the second run' });
      } else if (ex.startsWith('->') || ey.startsWith('->')) {
        diffs.push({ what, detail: `${ex} vs ${ey}` });
      } else {
        const parse = (e: string): Digest => {
          const [hash, size] = e.split(' ')[0]!.split('/');
          return { hash: hash!, size_bytes: Number(size) };
        };
        diffs.push({ what, detail: await blobDifference(blobs, parse(ex), parse(ey)) });
      }
    }
  }
  return diffs;
}
