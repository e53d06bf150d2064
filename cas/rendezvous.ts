// Rendezvous (highest-random-weight) hashing of a SHA-256 hex hash over named, weighted nodes:
// every process that knows the same nodes (names and weights) ranks them the same way for a hash,
// and adding or removing a node moves only the keys it gains or held.
//
// Weighted HRW: node score = -weight / ln(u), u in (0,1) a hash of (node name, key); the highest
// scores win, so a node's share is proportional to its weight. The node *name* (e.g. a storage
// node's address) is what places keys: keep it stable across restarts.
import { createHash } from 'node:crypto';
import { invalidArgument } from '../common/errors.ts';

export interface RendezvousNode<T> {
  /** Stable identity that places keys; unique among nodes. */
  name: string;
  /** Relative capacity (default 1). */
  weight?: number;
  value: T;
}

interface Prepared<T> {
  name: string;
  weight: number;
  value: T;
  seed0: number;
  seed1: number;
}

export class Rendezvous<T> {
  private readonly nodes: Prepared<T>[];

  constructor(nodes: ReadonlyArray<RendezvousNode<T>>, what = 'node') {
    if (nodes.length === 0) throw invalidArgument(`rendezvous hashing needs at least one ${what}`);
    const names = new Set<string>();
    this.nodes = nodes.map((n) => {
      if (names.has(n.name)) throw invalidArgument(`${what} name "${n.name}" is used twice`);
      names.add(n.name);
      const weight = n.weight ?? 1;
      if (!(weight > 0) || !Number.isFinite(weight)) throw invalidArgument(`${what} "${n.name}": weight ${weight} is not a positive number`);
      const seed = createHash('sha256').update(n.name).digest();
      return { name: n.name, weight, value: n.value, seed0: seed.readUInt32BE(0), seed1: seed.readUInt32BE(4) };
    });
  }

  get size(): number {
    return this.nodes.length;
  }

  /** The node that owns `hash` (a SHA-256 hex digest). */
  owner(hash: string): { name: string; weight: number; value: T } {
    return this.ranked(hash, 1)[0]!;
  }

  /** The `count` best nodes for `hash`, best first. */
  ranked(hash: string, count = this.nodes.length): Array<{ name: string; weight: number; value: T }> {
    if (this.nodes.length === 1) return [this.nodes[0]!];
    // The hash is SHA-256 hex: its first 64 bits are already uniform.
    const k0 = parseInt(hash.slice(0, 8), 16) >>> 0;
    const k1 = parseInt(hash.slice(8, 16), 16) >>> 0;
    return this.nodes
      .map((n) => ({ n, score: -n.weight / Math.log(unitHash(k0, k1, n.seed0, n.seed1)) }))
      .sort((a, b) => b.score - a.score || (a.n.name < b.n.name ? -1 : 1))
      .slice(0, count)
      .map(({ n }) => n);
  }
}

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** A hash of (key, seed) as a number strictly between 0 and 1, with 52 bits. */
function unitHash(k0: number, k1: number, s0: number, s1: number): number {
  const a = mix32(k0 ^ s0);
  const b = mix32((k1 ^ s1 ^ Math.imul(a, 0x9e3779b1)) >>> 0);
  const c = mix32((a ^ Math.imul(b, 0x27d4eb2f)) >>> 0);
  return (c * 0x100000 + (b >>> 12) + 0.5) / 2 ** 52;
}
