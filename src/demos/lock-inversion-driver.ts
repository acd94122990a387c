/**
 * The driver of `dmabuf-sim demo lock-inversion` (loaded twice, as dev1 and dev2): a device with an engine lock and
 * three jobs that take a buffer's reservation lock and the device lock in opposite orders — the inversion of seed
 * 002. Each runs in the driver's worker on an ioctl (LOCKINV_IOC_RUN: a JSON request, a JSON answer back).
 *
 * - `copy` (dev2): queues a copy A → B (buffer fds of the caller): a job fence F (this driver its annotated
 *   signaller) added to A (read) and B (write) under one ww_acquire_ctx; the job holds both buffers.
 * - `complete` (dev2): retires the copy: device lock → B's reservation lock (to retire the job from B) → signal F.
 *   Order: device lock → resv.
 * - `evict` (dev1): evicts A and B — both reservation locks under one context, wait for A to be idle (F), then the
 *   device lock (to unbind the buffers from its engine). Order: resv → device lock, and a fence wait under resv.
 *
 * Taken one after the other, nothing blocks, yet lockdep sees both orders and reports the cycle. Interleaved —
 * `evict` waiting for F while holding B's lock, `complete` then blocking on B — the two workers deadlock for real:
 * dev1 waits for dev2 to finish buffer A, dev2 waits for dev1 to finish with buffer B. The watchdog names the cycle
 * and fails the wait that closed it (`complete`'s lock of B) with -EDEADLK; `complete` then takes its error path:
 * it signals F with that error, so the eviction goes on.
 */
import { E, KernelError, dmaBufGet, dmaBufPut, makeDriver, type DmaBuf, type Driver, type DriverFile, type IoctlArg } from '../driver/index.js';
import {
  DMA_RESV_USAGE_BOOKKEEP,
  DMA_RESV_USAGE_READ,
  DMA_RESV_USAGE_WRITE,
  type DmaResv,
  dmaResvAddFence,
  dmaResvLock,
  dmaResvLockSlow,
  dmaResvReserveFences,
  dmaResvUnlock,
  dmaResvWaitTimeout,
  wwAcquireInit,
} from '../fence/dma-resv.js';
import {
  MAX_SCHEDULE_TIMEOUT,
  dmaFenceContextAlloc,
  dmaFenceInit,
  dmaFencePut,
  dmaFenceSetError,
  dmaFenceSetSignaller,
  dmaFenceSignal,
  type DmaFence,
} from '../fence/dma-fence.js';
import { LockClass, Mutex, type WwAcquireCtx } from '../locking/index.js';
import { LOCKINV_IOC_RUN } from './lock-inversion-uapi.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Every device of this driver shares the class: what lockdep predicts for one holds for all of them. */
const deviceLockClass = new LockClass('lockinv_device_lock');

/** A queued job: its fence and the buffers it holds references to until it is retired. */
interface Job {
  readonly fence: DmaFence;
  readonly src: DmaBuf;
  readonly dst: DmaBuf;
}

interface Device {
  readonly name: string;
  readonly lock: Mutex;
  /** The queued copy, until it is retired. */
  job: Job | null;
  context: number;
  seqno: number;
}

/** Locks `objs` under one acquire context, backing off on -EDEADLK as ww_mutex requires. */
function lockAll(ctx: WwAcquireCtx, objs: readonly DmaResv[]): void {
  let contended: DmaResv | null = null;
  for (;;) {
    let failed: DmaResv | null = null;
    const held: DmaResv[] = [];
    if (contended) {
      const r = dmaResvLockSlow(contended, ctx);
      if (r !== 0) throw new KernelError(-r, 'dma_resv_lock_slow');
      held.push(contended);
    }
    for (const o of objs) {
      if (o === contended) continue;
      const r = dmaResvLock(o, ctx);
      if (r === -E.EDEADLK) {
        failed = o;
        break;
      }
      if (r !== 0) {
        for (const h of held) dmaResvUnlock(h);
        throw new KernelError(-r, 'dma_resv_lock');
      }
      held.push(o);
    }
    if (!failed) return;
    for (const h of held) dmaResvUnlock(h);
    contended = failed;
  }
}

/** The copy A → B (the caller's buffer fds): job fence F on A (read) and B (write); the job holds both buffers. */
function copy(dev: Device, fdA: number, fdB: number): { seqno: number } {
  if (dev.job) throw new KernelError(E.EBUSY, 'a copy is queued already');
  const src = dmaBufGet(fdA);
  let dst: DmaBuf;
  try {
    dst = dmaBufGet(fdB);
  } catch (e) {
    dmaBufPut(src);
    throw e;
  }
  const a = src.resv;
  const b = dst.resv;
  const f = dmaFenceInit({ driverName: 'lockinv', timelineName: dev.name }, dev.context, ++dev.seqno);
  dmaFenceSetSignaller(f); // this worker will signal it: the watchdog follows waits on F here
  const ctx = wwAcquireInit();
  lockAll(ctx, [a, b]);
  ctx.done();
  try {
    for (const [o, usage] of [[a, DMA_RESV_USAGE_READ], [b, DMA_RESV_USAGE_WRITE]] as const) {
      if (dmaResvReserveFences(o, 1) !== 0) throw new KernelError(E.ENOMEM, 'dma_resv_reserve_fences');
      dmaResvAddFence(o, f, usage);
    }
  } finally {
    dmaResvUnlock(b);
    dmaResvUnlock(a);
    ctx.fini();
  }
  dev.job = { fence: f, src, dst };
  return { seqno: dev.seqno };
}

/**
 * Retires the copy: device lock → B's reservation lock → signal F. (Annotated as a signalling section from the
 * start, as drm/scheduler's completion paths are, lockdep would report this path on its own: a reservation lock
 * inside a signalling section. Left plain here, so the report is the inversion of the two locks.)
 */
function complete(dev: Device): { ret: number } {
  const job = dev.job;
  if (!job) throw new KernelError(E.EINVAL, 'no job queued');
  const f = job.fence;
  const b = job.dst.resv;
  let ret: number;
  dev.lock.lock();
  try {
    ret = dmaResvLock(b, null);
    if (ret === 0) dmaResvUnlock(b); // the job's bookkeeping on B would go here
  } finally {
    dev.lock.unlock();
  }
  // The error path (-EDEADLK from the watchdog): the job still ends, with its error on the fence.
  if (ret < 0) dmaFenceSetError(f, ret);
  dmaFenceSignal(f);
  dev.job = null;
  dmaFencePut(f);
  dmaBufPut(job.src);
  dmaBufPut(job.dst);
  return { ret };
}

/** Evicts A and B (the caller's buffer fds): both reservation locks, wait for A to be idle, then the device lock. */
function evict(dev: Device, fdA: number, fdB: number): { waited: number; waitedMs: number } {
  const bufA = dmaBufGet(fdA);
  try {
    const bufB = dmaBufGet(fdB);
    try {
      return evictLocked(dev, bufA.resv, bufB.resv);
    } finally {
      dmaBufPut(bufB);
    }
  } finally {
    dmaBufPut(bufA);
  }
}

function evictLocked(dev: Device, a: DmaResv, b: DmaResv): { waited: number; waitedMs: number } {
  const ctx = wwAcquireInit();
  lockAll(ctx, [a, b]);
  ctx.done();
  const t0 = performance.now();
  try {
    const waited = dmaResvWaitTimeout(a, DMA_RESV_USAGE_BOOKKEEP, false, MAX_SCHEDULE_TIMEOUT);
    const waitedMs = performance.now() - t0;
    dev.lock.lock(); // unbind from the engine
    dev.lock.unlock();
    return { waited: waited > 0 ? 1 : waited, waitedMs };
  } finally {
    dmaResvUnlock(b);
    dmaResvUnlock(a);
    ctx.fini();
  }
}

function run(dev: Device, req: { op?: string; a?: unknown; b?: unknown }): unknown {
  const fd = (v: unknown): number => {
    if (!Number.isInteger(v)) throw new KernelError(E.EBADF, 'buffer fd');
    return v as number;
  };
  switch (req.op) {
    case 'copy':
      return copy(dev, fd(req.a), fd(req.b));
    case 'complete':
      return complete(dev);
    case 'evict':
      return evict(dev, fd(req.a), fd(req.b));
    default:
      throw new KernelError(E.EINVAL, `op ${String(req.op)}`);
  }
}

/** probe: one device, /dev/lockinv-<driver name>. */
export function probe(drv: Driver = makeDriver('lockinv')): void {
  const dev: Device = { name: drv.name, lock: new Mutex(deviceLockClass), job: null, context: dmaFenceContextAlloc(1), seqno: 0 };
  drv.registerChrdev(`/dev/lockinv-${drv.name}`, {
    ioctl(_file: DriverFile, cmd: number, arg: IoctlArg): number {
      if (cmd !== LOCKINV_IOC_RUN || !arg.bytes) throw new KernelError(E.ENOTTY, `ioctl ${cmd}`);
      const bytes = arg.bytes;
      const n = bytes.indexOf(0);
      const req = JSON.parse(dec.decode(bytes.subarray(0, n < 0 ? bytes.length : n))) as { op?: string; a?: unknown; b?: unknown };
      const answer = enc.encode(JSON.stringify(run(dev, req)));
      if (answer.length >= bytes.length) throw new KernelError(E.EOVERFLOW, 'answer');
      bytes.fill(0);
      bytes.set(answer);
      return 0;
    },
  });
}
