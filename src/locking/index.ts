/**
 * The locking layer every worker can import (processes, drivers, the broker, the main thread): shared-memory
 * Mutex / SpinLock, ww_mutex (WwClass, WwAcquireCtx, WwMutex), the lock validator (lockdep) with its reports, the
 * dma_fence signalling annotations, and the real-deadlock watchdog (LockWatchdog). See domain.ts for the shared tables and why the graph lives in them.
 */
import { isMainThread } from 'node:worker_threads';
import { LockDomain, type AttachOwner, type DomainOptions } from './domain.js';
import { lockdepWorkerExit } from './mutex.js';

export { LockDomain, type AttachOwner, type DomainOptions, type Suppression, type Liveness } from './domain.js';
export {
  LockClass,
  LockMap,
  LockdepError,
  heldLocks,
  heldCount,
  lockAcquire,
  lockRelease,
  lockIsHeld,
  lockdepReports,
  lockdepSuppressedCount,
  lockdepResetWorker,
  enterAtomic,
  exitAtomic,
  setLockdepSink,
  beginExpectLockdepReports,
  endExpectLockdepReports,
  expectLockdepReports,
  type ReportPattern,
  type ReportExpectation,
  type LockdepMap,
  type LockdepReport,
  type ReportKind,
  type WaitType,
} from './lockdep.js';
export { Mutex, SpinLock, lockdepWorkerExit, type LockHandle, type MutexOptions } from './mutex.js';
export { WwClass, WwAcquireCtx, WwMutex } from './ww-mutex.js';
export { LockWatchdog, DEFAULT_HUNG_TASK_TIMEOUT_MS, fenceTableLookup, type WatchdogOptions, type FenceLookup, type PublishedWait } from './watchdog.js';
export {
  installFenceLockdep,
  uninstallFenceLockdep,
  dmaResvLockdep,
  dmaFenceMap,
  mightAlloc,
  fsReclaimAcquire,
  fsReclaimRelease,
  reservationWwClass,
  beginSignalling,
  endSignalling,
  fenceMightWait,
} from './fence-lockdep.js';

/**
 * Attaches this worker to a domain another worker created (or creates one when `sab` is omitted), makes it the
 * current domain and, in a worker thread, reports and releases any lock still held when the thread exits.
 * Returns the view; pass `view.token` to whoever watches this worker's 'exit' so it can call ownerDied(token).
 */
export function attachLocking(sab?: SharedArrayBuffer, name?: string, opts: DomainOptions = {}, who: AttachOwner = {}): LockDomain {
  const d = sab ? LockDomain.attach(sab, name, who) : LockDomain.create(opts, name);
  LockDomain.setCurrent(d);
  if (!isMainThread && !exitHooked.has(d)) {
    exitHooked.add(d);
    exitDomains.push(new WeakRef(d));
    // One 'exit' listener per worker, however many domains it attaches (a test worker attaches one per case).
    if (exitDomains.length === 1) process.once('exit', () => {
      for (const ref of exitDomains) {
        const x = ref.deref();
        if (x) lockdepWorkerExit(x);
      }
    });
  }
  return d;
}
const exitHooked = new WeakSet<LockDomain>();
const exitDomains: WeakRef<LockDomain>[] = [];
