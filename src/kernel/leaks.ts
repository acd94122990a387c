/**
 * The object tracker: every kernel object with a lifetime (open file, dma-buf, fence, socket message in flight)
 * is registered at creation with where it came from, and unregistered when its last reference goes. Whatever is
 * still registered when the machine shuts down is a leak, reported with its origin.
 *
 * Broker thread only. Ids come from a counter, so reports are deterministic.
 */

export interface Origin {
  /** pid of the process whose syscall created the object (0: the kernel itself / the control plane). */
  readonly pid: number;
  readonly comm: string;
  /** The syscall (and ioctl name) that created it, e.g. "ioctl(DMA_HEAP_IOCTL_ALLOC)". */
  readonly call: string;
  /** Per-process syscall sequence number: the n-th call the process made. */
  readonly seq: number;
  /** The caller's JavaScript stack, when the machine records stacks. */
  readonly stack?: string;
}

export interface TrackedObject {
  readonly id: number;
  readonly kind: string;
  readonly origin: Origin;
  describe(): string;
}

export interface LeakReport {
  readonly id: number;
  readonly kind: string;
  readonly what: string;
  readonly createdBy: Origin;
}

export class ObjectTracker {
  private nextId = 1;
  private readonly live = new Map<number, TrackedObject>();

  add(kind: string, origin: Origin, describe: () => string): number {
    const id = this.nextId++;
    this.live.set(id, { id, kind, origin, describe });
    return id;
  }

  remove(id: number): void {
    this.live.delete(id);
  }

  count(kind?: string): number {
    if (!kind) return this.live.size;
    let n = 0;
    for (const o of this.live.values()) if (o.kind === kind) n++;
    return n;
  }

  report(): LeakReport[] {
    return [...this.live.values()].map((o) => ({ id: o.id, kind: o.kind, what: o.describe(), createdBy: o.origin }));
  }
}

export function formatLeaks(leaks: readonly LeakReport[]): string {
  if (leaks.length === 0) return 'no leaks\n';
  let s = `${leaks.length} leaked object(s):\n`;
  for (const l of leaks) {
    const o = l.createdBy;
    s += `  #${l.id} ${l.kind}: ${l.what}\n    created by pid ${o.pid} (${o.comm}) in ${o.call}, syscall #${o.seq}\n`;
    if (o.stack) s += o.stack.split('\n').map((line) => `      ${line}`).join('\n') + '\n';
  }
  return s;
}

// ---- what processes held when they ended ---------------------------------------------------------------------

/** An fd a process still had open when it ended. */
export interface HeldFd {
  readonly fd: number;
  /** The file: its kind and the path readlink(/proc/<pid>/fd/N) shows, e.g. "dmabuf /dmabuf:frame". */
  readonly what: string;
  readonly createdBy: Origin;
}

/** A mapping a process still had when it ended. */
export interface HeldMapping {
  readonly address: number;
  readonly length: number;
  readonly what: string;
  readonly createdBy: Origin;
}

/**
 * What one process still held when it ended (exit, crash or kill) — released by its exit, as in C, so not a
 * leak; listed so a test can see what a process left to exit to close. fds 0–2 it started with are not listed.
 * The last task using an fd table or address space reports it (a thread sharing them reports nothing).
 */
export interface HeldReport {
  readonly pid: number;
  readonly comm: string;
  /** The worker's exit code (the exit status; 1 after an uncaught error or a kill). */
  readonly exitCode: number;
  /** Killed (Proc.kill(), or by shutdown()) rather than exiting. */
  readonly killed: boolean;
  readonly fds: HeldFd[];
  readonly mappings: HeldMapping[];
}

export function formatHeld(held: readonly HeldReport[]): string {
  if (held.length === 0) return 'no process held anything when it ended\n';
  let s = '';
  const origin = (o: Origin): string => {
    let r = `created by pid ${o.pid} (${o.comm}) in ${o.call}, syscall #${o.seq}\n`;
    if (o.stack) r += o.stack.split('\n').map((line) => `        ${line}`).join('\n') + '\n';
    return r;
  };
  for (const h of held) {
    const how = h.killed ? 'was killed' : `exited (status ${h.exitCode})`;
    s += `pid ${h.pid} (${h.comm}) ${how} holding ${h.fds.length} fd(s) and ${h.mappings.length} mapping(s):\n`;
    for (const f of h.fds) s += `  fd ${f.fd}: ${f.what}\n    ${origin(f.createdBy)}`;
    for (const m of h.mappings) {
      s += `  mapping 0x${m.address.toString(16)} +${m.length}: ${m.what}\n    ${origin(m.createdBy)}`;
    }
  }
  return s;
}
