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
