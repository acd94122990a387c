/**
 * Waiting for fences from syscall context without blocking the broker: the parked-syscall form of
 * dma_fence_wait / dma_resv_wait_timeout, woken by fence callbacks the broker registers.
 *
 * ## How kernel code in the broker waits (the three contexts)
 * The broker thread is the only CPU the kernel has: it must never Atomics.wait on a fence, because the worker that
 * will signal it may need the broker first (a syscall of its own) — a deadlock the real kernel does not have. So a
 * kernel path that the C code lets sleep picks one of these, by the context it runs in:
 *   1. **Syscall context** (a handler serving a process): return the `SyscallOutcome` of dmaFencesWaitSyscall() /
 *      dmaResvWaitSyscall() with the rest of the work as `then`. When nothing is pending, `then` runs at once;
 *      otherwise the syscall parks (`Blocked`) and `then` runs in the task's context once every fence signaled.
 *      The process stays blocked in its syscall exactly as in a sleeping ioctl. This is DMA_BUF_IOCTL_SYNC START.
 *   2. **Event-loop context** (control plane, in-broker drivers reacting to events): the async kernel APIs
 *      (dmaResvWaitAsync, dmaBufBeginCpuAccessAsync, dmaBufMapAttachmentAsync) resolve when the fences signaled.
 *      The caller must hold its references across the await and must not hold a dma_resv lock across it.
 *   3. **Atomic context** (everything synchronous, e.g. KUnit cases and the plain kernel APIs): the synchronous
 *      dma-buf APIs never sleep; where the C function would wait for an unsignaled fence they fail with EAGAIN
 *      (DMA_BUF_IOCTL_SYNC is documented to fail with -EAGAIN and be restarted) and say which API to use instead.
 *
 * Threading: broker only (fence callbacks registered here run in the broker, promptly, because it attaches to the
 * fence table with eventLoop: true; a signal by the broker itself runs them synchronously).
 */
import {
  DmaFenceCb,
  type DmaFence,
  dmaFenceAddCallback,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceRemoveCallback,
} from '../fence/dma-fence.js';
import { type DmaResv, type DmaResvUsage, dmaResvGetFences, dmaResvLockNoWait } from '../fence/dma-resv.js';
import { waitAsyncWord } from '../fence/runtime.js';
import { SLICE_MS } from '../locking/domain.js';
import { L_STATE } from '../locking/mutex.js';
import { E } from '../uapi/errno.js';
import { Blocked, WaitQueue, type SyscallOutcome } from './wait.js';

/**
 * Waits (syscall context) for every fence of `fences`, in order, then returns `then()`'s result.
 *
 * Takes over the caller's references to `fences` (they are put when the wait ends, whichever way). One callback at
 * a time is armed, on the first fence not yet signaled — dma_resv_wait_timeout's sequential wait; its firing wakes
 * a private wait queue and the retry moves on. `then` runs in the task's context, synchronously with the last
 * check, so nothing can slip in between "all signaled" and the work. `then` may throw a KernelError (the syscall
 * fails) and runs at most once. Never times out (MAX_SCHEDULE_TIMEOUT); a dying task or shutdown ends the park,
 * which removes the armed callback.
 */
export function dmaFencesWaitSyscall(fences: DmaFence[], then: () => number): SyscallOutcome {
  const queue = new WaitQueue();
  const cb = new DmaFenceCb();
  let armed: DmaFence | null = null;
  let next = 0;
  /** Advances past signaled fences; true when all are done, false with a callback armed on the next one. */
  const step = (): boolean => {
    for (; next < fences.length; next++) {
      const f = fences[next]!;
      if (armed === f) return false; // its callback has not run yet
      if (dmaFenceIsSignaled(f)) continue;
      const r = dmaFenceAddCallback(f, cb, () => {
        armed = null;
        queue.wake();
      });
      if (r === 0) {
        armed = f;
        return false;
      }
      // -ENOENT: it signaled between the check and the add; move on.
    }
    return true;
  };
  const release = (): void => {
    // remove_callback before the put: our reference keeps the fence (and the queued callback) valid until then.
    if (armed) dmaFenceRemoveCallback(armed, cb);
    armed = null;
    for (const f of fences.splice(0)) dmaFencePut(f);
  };
  let done: boolean;
  try {
    done = step();
  } catch (e) {
    release();
    throw e;
  }
  if (done) {
    release();
    return then();
  }
  return new Blocked(
    () => (step() ? then() : undefined),
    [queue],
    -1,
    () => 0, // no timeout: never called
    release,
  );
}

/**
 * dma_resv_wait_timeout(obj, usage, true, MAX_SCHEDULE_TIMEOUT) for a syscall: snapshots the unsignaled fences of
 * usage ≤ `usage` (the fences added later are not waited for, as with the kernel's iterator snapshot) and waits
 * for them with dmaFencesWaitSyscall, then returns `then()`. No resv lock needed (the unlocked iterator).
 */
export function dmaResvWaitSyscall(obj: DmaResv, usage: DmaResvUsage, then: () => number): SyscallOutcome {
  const got = { numFences: 0, fences: [] as DmaFence[] };
  dmaResvGetFences(obj, usage, got);
  if (got.numFences === 0) return then();
  return dmaFencesWaitSyscall(got.fences, then);
}

/**
 * dma_resv_lock(obj, NULL) for a syscall: runs `then()` with the reservation lock held — `then` must unlock it —
 * at once when the lock is free (or its holder dead: taken over, -EOWNERDEAD, reported), else parks the call
 * until it can take it. `cleanup` runs once when the call ends, whichever way (done, failed, task died, shutdown).
 *
 * The broker never sleeps on the lock word: while parked, an Atomics.waitAsync watcher waits for the word to
 * change and wakes the park's queue, which retries. Race-free: each failed try sets the waiters bit in the holder's
 * word, so its unlock notifies, and the watcher waits only while the word still holds the value it read. Bounded:
 * the watcher's waits are SLICE_MS slices, and each retry checks the holder's liveness (a dead holder's lock is
 * taken over on the next try).
 */
export function dmaResvLockSyscall(obj: DmaResv, then: () => number, cleanup: () => void = () => {}): SyscallOutcome {
  if (dmaResvLockNoWait(obj) !== -E.EBUSY) {
    try {
      return then();
    } finally {
      cleanup();
    }
  }
  const queue = new WaitQueue();
  let ended = false;
  const word = obj.lock.word;
  const watch = (): void => {
    const v = Atomics.load(word, L_STATE);
    void waitAsyncWord(word, L_STATE, v, SLICE_MS).then(() => {
      if (!ended) queue.wake();
    });
  };
  watch();
  return new Blocked(
    () => {
      if (dmaResvLockNoWait(obj) === -E.EBUSY) {
        watch();
        return undefined;
      }
      return then();
    },
    [queue],
    -1,
    () => 0, // no timeout: never called
    () => {
      ended = true;
      cleanup();
    },
  );
}
