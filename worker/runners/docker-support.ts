// Pieces of the DockerRunner that do not talk to the engine: image references, the in-container
// wrapper script and its end-of-run markers, the demultiplexer of Docker's attach stream, a
// reader of the container's cgroup, and small host checks.

import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { readLimitEvents, readText, readUsage, type CgroupDirs, type CgroupUsage, type LimitEvents } from './cgroup-files.ts';
import { CappedOutput } from './output-buffer.ts';
import { shQuote } from './supervision.ts';

/** The platform property naming the image an action runs in. */
export const CONTAINER_IMAGE = 'container-image';

/** Where the static helper (busybox) and the control FIFO appear inside every container. */
export const HELPER_DIR = '/.reapi';
export const HELPER = `${HELPER_DIR}/busybox`;
export const CONTROL_DIR = `${HELPER_DIR}/ctl`;
export const SCRIPT_FIFO = 'go';

/**
 * `docker://NAME[:TAG|@DIGEST]` (or a bare reference) -> the reference the engine knows, with
 * `:latest` added when neither tag nor digest is given. Undefined when it is not a Docker image.
 */
export function parseImage(value: string): string | undefined {
  let ref = value.trim();
  if (ref.startsWith('docker://')) ref = ref.slice('docker://'.length);
  else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(ref)) return undefined;
  if (!/^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$/.test(ref)) return undefined;
  const lastSlash = ref.lastIndexOf('/');
  const name = ref.slice(lastSlash + 1);
  if (!ref.includes('@') && !name.includes(':')) ref += ':latest';
  return ref;
}

/** How to get `image` into a worker's engine without a registry. */
export function importHint(image: string): string {
  const repo = image.replace(/[:@].*$/, '');
  if (repo === 'reapi-busybox') return 'scripts/docker/build-images.sh busybox';
  if (repo === 'reapi-debian') return 'scripts/docker/build-images.sh debian';
  return `tar -C ROOTFS -c . | docker import - ${image}  (or: docker load -i IMAGE.tar)`;
}

/** True when `path` is an ELF executable without a program interpreter (statically linked). */
export async function isStaticElf(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
    const head = Buffer.alloc(64);
    await fh.read(head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return false; // ELF64 LE only
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    await fh.read(table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) if (table.readUInt32LE(i * phentsize) === 3) return false; // PT_INTERP
    return true;
  } catch {
    return false;
  } finally {
    await fh?.close();
  }
}

/** Start time of a process (clock ticks since boot, /proc/PID/stat field 22); undefined if gone. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The wrapper

/**
 * Every container runs WRAPPER_COMMAND: the shell blocks reading the FIFO until the worker writes
 * the run's script into it and closes it, which is what lets a container be created and started
 * before its action is known. The whole script is read before any of it runs, so nothing of it
 * (the end-marker nonce included) is left in the FIFO for the action to read. The script sets the
 * umask, enters the working directory, runs the action with exactly the given environment (busybox
 * `env -i`; stdin /dev/null), then SIGKILLs every other process in the container and waits until
 * they are all gone (or zombies), and only then writes the end markers: one on stderr, then one on
 * stdout carrying the exit status; the wrapper then sleeps until the container is removed, so that
 * its cgroup can still be read. The worker never takes the markers on trust: the run is over only
 * when the container's cgroup holds no process but the wrapper (ContainerCgroup.othersThan), so an
 * action that prints markers of its own gains nothing but ending its own output.
 */
export const WRAPPER_COMMAND = ['sh', '-c', `s=$(${HELPER} cat ${CONTROL_DIR}/${SCRIPT_FIFO}) && eval "$s"`];

export interface WrapperScript {
  text: string;
  /** Exact bytes that end stdout: marker + 3-digit status + '\n'. */
  stdoutMarker: Buffer;
  stderrMarker: Buffer;
}

/** Status the wrapper reports when it cannot enter the working directory. */
export const STATUS_NO_WORKDIR = 999;

export function wrapperScript(opts: { umask: number; cwd: string; env: Record<string, string>; argv: string[] }): WrapperScript & { markerPrefix: string } {
  const nonce = randomBytes(12).toString('hex');
  const prefix = `\u0000reapi-end-${nonce}:`;
  const umask = opts.umask.toString(8).padStart(4, '0');
  const assignments = Object.entries(opts.env).map(([k, v]) => shQuote(`${k}=${v}`));
  // `env` would take a first word with '=' for an assignment, or one starting with '-' for an
  // option: such a program is exec'ed through a shell instead.
  const first = opts.argv[0] ?? '';
  const via = first.includes('=') || first.startsWith('-') ? `${HELPER} sh -c 'exec "$0" "$@"' ` : '';
  const lines = [
    `umask ${umask}`,
    `if cd -- ${shQuote(opts.cwd)} 2>/dev/null; then`,
    `  ${HELPER} env -i ${assignments.join(' ')} ${via}${opts.argv.map(shQuote).join(' ')} </dev/null &`,
    // As a background job waited for, a child killed by a signal is not reported ("Killed").
    '  wait $!',
    '  s=$?',
    'else',
    `  echo "reapi: cannot enter the working directory "${shQuote(opts.cwd)} >&2`,
    `  s=${STATUS_NO_WORKDIR}`,
    'fi',
    'kill -9 -1 2>/dev/null',
    'while :; do',
    '  busy=',
    '  for f in /proc/[0-9]*/stat; do',
    '    [ "$f" = /proc/1/stat ] && continue',
    '    { read -r l < "$f"; } 2>/dev/null || continue',
    '    case "${l##*) }" in Z*|X*) ;; *) busy=1; break;; esac',
    '  done',
    '  [ -z "$busy" ] && break',
    '  kill -9 -1 2>/dev/null',
    'done',
    `printf '\\000reapi-end-${nonce}:\\n' >&2`,
    `printf '\\000reapi-end-${nonce}:%03d\\n' "$s"`,
    // Stay alive until the worker removes the container, so that its cgroup can still be read.
    `exec ${HELPER} sleep 2147483647`,
    '',
  ];
  return {
    text: lines.join('\n'),
    markerPrefix: prefix,
    stdoutMarker: Buffer.from(prefix, 'latin1'),
    stderrMarker: Buffer.from(`${prefix}\n`, 'latin1'),
  };
}

// ---------------------------------------------------------------------------------------------
// Attach stream

/**
 * One of the two streams: keeps (capped) what the action wrote and recognises the wrapper's
 * marker at the very end. The last bytes that could be the start of a marker are held back until
 * more data shows they are not.
 */
class MarkedStream {
  readonly out: CappedOutput;
  private held = Buffer.alloc(0);
  /** Set once the marker has arrived: the trailing bytes after the marker prefix. */
  ended: string | undefined;

  constructor(
    limit: number,
    private readonly marker: Buffer,
    /** Bytes after the marker prefix: '\n' for stderr, 'NNN\n' for stdout. */
    private readonly tailLength: number,
  ) {
    this.out = new CappedOutput(limit);
  }

  push(chunk: Buffer): void {
    if (this.ended !== undefined) return;
    const buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    const full = this.marker.length + this.tailLength;
    const at = buf.indexOf(this.marker);
    if (at >= 0 && buf.length - at >= full) {
      this.out.push(buf.subarray(0, at));
      this.ended = buf.subarray(at + this.marker.length, at + full).toString('latin1');
      this.held = Buffer.alloc(0);
      return;
    }
    // Keep back a possible partial marker (its first byte is NUL, rare in text output).
    let keep = 0;
    if (at >= 0) keep = buf.length - at;
    else {
      for (let k = Math.min(this.marker.length - 1, buf.length); k > 0; k--) {
        if (buf.subarray(buf.length - k).equals(this.marker.subarray(0, k))) {
          keep = k;
          break;
        }
      }
    }
    this.out.push(buf.subarray(0, buf.length - keep));
    this.held = Buffer.from(buf.subarray(buf.length - keep));
  }

  /** The stream ended without a marker: what was held back was the action's. */
  flush(): void {
    if (this.held.length) this.out.push(this.held);
    this.held = Buffer.alloc(0);
  }
}

/** Splits Docker's multiplexed attach stream (8-byte frame headers) into stdout and stderr. */
export class AttachDemux {
  readonly stdout: MarkedStream;
  readonly stderr: MarkedStream;
  private pending = Buffer.alloc(0);
  private onEnd: (() => void) | undefined;

  constructor(limit: number, script: { stdoutMarker: Buffer; stderrMarker: Buffer }) {
    this.stdout = new MarkedStream(limit, script.stdoutMarker, 4);
    this.stderr = new MarkedStream(limit, script.stderrMarker, 0);
  }

  /** Resolves when both markers have arrived. */
  markers(): Promise<void> {
    return new Promise((resolve) => {
      this.onEnd = resolve;
      this.check();
    });
  }

  get complete(): boolean {
    return this.stdout.ended !== undefined && this.stderr.ended !== undefined;
  }

  /** Exit status reported by the wrapper, once complete. */
  get status(): number | undefined {
    const s = this.stdout.ended;
    return s === undefined ? undefined : Number(s.slice(0, 3));
  }

  write(chunk: Buffer): void {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (buf.length >= 8) {
      const size = buf.readUInt32BE(4);
      if (buf.length < 8 + size) break;
      const payload = buf.subarray(8, 8 + size);
      if (buf[0] === 2) this.stderr.push(payload);
      else this.stdout.push(payload);
      buf = buf.subarray(8 + size);
    }
    this.pending = Buffer.from(buf);
    this.check();
  }

  end(): void {
    this.stdout.flush();
    this.stderr.flush();
  }

  private check(): void {
    if (this.complete && this.onEnd) {
      const f = this.onEnd;
      this.onEnd = undefined;
      f();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The container's cgroup, read from the host

let mountsCache: Promise<{ v1: Map<string, string>; v2: string | undefined }> | undefined;

/** cgroup mount points: v1 controller -> mount, and the v2 mount. */
function cgroupMounts(): Promise<{ v1: Map<string, string>; v2: string | undefined }> {
  mountsCache ??= (async () => {
    const v1 = new Map<string, string>();
    let v2: string | undefined;
    const info = (await readText('/proc/self/mountinfo')) ?? '';
    for (const line of info.split('\n')) {
      const [pre, post] = line.split(' - ');
      if (!pre || !post) continue;
      const mountPoint = pre.split(' ')[4];
      const [fstype, , options] = post.split(' ');
      if (!mountPoint) continue;
      if (fstype === 'cgroup2') v2 ??= mountPoint;
      else if (fstype === 'cgroup') for (const o of (options ?? '').split(',')) if (['memory', 'pids', 'cpuacct'].includes(o)) v1.set(o, mountPoint);
    }
    return { v1, v2 };
  })();
  return mountsCache;
}

/** The cgroup directories of a container's process, found through /proc/PID/cgroup. */
export class ContainerCgroup {
  private constructor(
    private readonly memory: string | undefined,
    private readonly pids: string | undefined,
    private readonly cpuacct: string | undefined,
    private readonly v2: string | undefined,
  ) {}

  static async forPid(pid: number): Promise<ContainerCgroup | undefined> {
    const text = await readText(`/proc/${pid}/cgroup`);
    if (!text) return undefined;
    const mounts = await cgroupMounts();
    let memory: string | undefined;
    let pids: string | undefined;
    let cpuacct: string | undefined;
    let v2: string | undefined;
    for (const line of text.trim().split('\n')) {
      const m = /^(\d+):([^:]*):(.*)$/.exec(line);
      if (!m) continue;
      const [, , ctrls, path] = m as unknown as [string, string, string, string];
      if (ctrls === '' && mounts.v2) v2 = join(mounts.v2, path);
      for (const c of ctrls.split(',')) {
        const mount = mounts.v1.get(c);
        if (!mount) continue;
        if (c === 'memory') memory = join(mount, path);
        if (c === 'pids') pids = join(mount, path);
        if (c === 'cpuacct') cpuacct = join(mount, path);
      }
    }
    // A v2 directory without the memory controller (hybrid layout) is no use for limits.
    if (memory || pids) v2 = undefined;
    if (!memory && !pids && !v2) return undefined;
    return new ContainerCgroup(memory, pids, cpuacct, v2);
  }

  /** Processes in the container other than `pid` (its init, in the host's pid namespace). */
  async othersThan(pid: number): Promise<number> {
    const dir = this.v2 ?? this.pids ?? this.memory;
    const text = dir === undefined ? undefined : await readText(join(dir, 'cgroup.procs'));
    if (text === undefined) throw new Error('the container cgroup cannot be read');
    return text.split('\n').filter((l) => l.trim() !== '' && Number(l) !== pid).length;
  }

  limitEvents(): Promise<LimitEvents> {
    return readLimitEvents(this.dirs());
  }

  usage(): Promise<CgroupUsage> {
    return readUsage(this.dirs());
  }

  private dirs(): CgroupDirs {
    return this.v2 ? { v2: this.v2 } : { memory: this.memory, pids: this.pids, cpuacct: this.cpuacct };
  }
}
