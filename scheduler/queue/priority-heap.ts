// The in-process queue's priority heap: lower REAPI priority first, FIFO among equals.

/** A queued job as the heap sees it; `removed` marks one cancelled or moved (dropped lazily). */
export interface HeapEntry<T> {
  value: T;
  priority: number;
  seq: number;
  removed: boolean;
}

/** Whether `a` runs before `b`. */
export function precedes(a: { priority: number; seq: number }, b: { priority: number; seq: number }): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.seq < b.seq);
}

/** Binary min-heap on (priority, seq). */
export class Heap<T> {
  private items: HeapEntry<T>[] = [];

  push(e: HeapEntry<T>): void {
    const a = this.items;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!precedes(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }

  /** The best live entry, dropping cancelled ones found on top. */
  peek(): HeapEntry<T> | undefined {
    while (this.items.length && this.items[0]!.removed) this.pop();
    return this.items[0];
  }

  pop(): HeapEntry<T> | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length && last) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && precedes(a[l]!, a[m]!)) m = l;
        if (r < a.length && precedes(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }

  get size(): number {
    return this.items.length;
  }

  /** Entries not cancelled or moved. */
  live(): HeapEntry<T>[] {
    return this.items.filter((e) => !e.removed);
  }
}

