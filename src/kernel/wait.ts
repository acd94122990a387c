/**
 * Wait queues and blocked syscalls: how a syscall that cannot complete now (poll, recvmsg, a fence wait) parks
 * in the broker without blocking it, and completes when something wakes the queue it sleeps on.
 *
 * Only the broker thread touches these objects. A process whose syscall is parked simply keeps waiting on its
 * channel's STATE word; the broker writes the reply whenever the parked call finishes.
 */

export type Waiter = () => void;

/** wait_queue_head_t: a set of callbacks run by wake(). */
export class WaitQueue {
  private readonly waiters = new Set<Waiter>();

  add(w: Waiter): void {
    this.waiters.add(w);
  }

  remove(w: Waiter): void {
    this.waiters.delete(w);
  }

  get size(): number {
    return this.waiters.size;
  }

  /**
   * Runs every waiter registered at the time of the call. A waiter may remove itself or add others; those added
   * during the wake run at the next wake, as in the kernel's exclusive-less wake_up_all.
   */
  wake(): void {
    if (this.waiters.size === 0) return;
    for (const w of [...this.waiters]) w();
  }
}

/**
 * What a blocking syscall handler returns when it must sleep. `retry` is re-run after any wake of `queues`; it
 * returns the syscall's result, or `undefined` to keep sleeping, or throws a KernelError. `timeoutMs` < 0 sleeps
 * forever; on expiry `onTimeout` gives the result (poll returns 0, a read with SO_RCVTIMEO gives EAGAIN...).
 */
export class Blocked {
  constructor(
    readonly retry: () => number | undefined,
    readonly queues: readonly WaitQueue[],
    readonly timeoutMs: number,
    readonly onTimeout: () => number,
    /** Runs once when the sleep ends for any reason (completion, timeout, process death): undo registrations. */
    readonly cleanup?: () => void,
  ) {}
}

export type SyscallOutcome = number | Blocked;

/**
 * A syscall that waits for kernel work done elsewhere (an upcall into a driver worker, an event-loop wait):
 * parks until `p` settles, then returns `then(value)` (or throws its error) in the task's context. `abandoned`
 * runs, with the outcome, when the task died or the machine shut down while parked and `p` settles later — so
 * what the work made for the caller (an opened file) is released, not leaked.
 */
export function blockOnPromise<T>(
  p: Promise<T>,
  then: (v: T) => number,
  abandoned: (v: T | undefined, err: unknown) => void = () => {},
): Blocked {
  const q = new WaitQueue();
  let outcome: { ok: true; v: T } | { ok: false; err: unknown } | null = null;
  let gone = false;
  p.then(
    (v) => {
      outcome = { ok: true, v };
      if (gone) abandoned(v, undefined);
      else q.wake();
    },
    (err: unknown) => {
      outcome = { ok: false, err };
      if (gone) abandoned(undefined, err);
      else q.wake();
    },
  );
  return new Blocked(
    () => {
      const o = outcome as { ok: true; v: T } | { ok: false; err: unknown } | null;
      if (!o) return undefined;
      if (!o.ok) throw o.err;
      return then(o.v);
    },
    [q],
    -1,
    () => 0,
    () => {
      // Runs on every end of the sleep; only an end before the outcome is an abandonment.
      if (!outcome) gone = true;
    },
  );
}
