/**
 * vgem_fence.c: fences a process attaches to a vgem object's reservation object (as a writer or a reader) and
 * signals itself later — the way tests play a GPU. Each fence has its own context, expires after 10 s (a timer
 * signals it; the late SIGNAL then reports ETIMEDOUT), and closing the file signals whatever it left pending.
 */
import { KernelError, E } from '../../driver/index.js';
import {
  type DmaFence,
  dmaFenceContextAlloc,
  dmaFenceInit,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceSignal,
} from '../../fence/dma-fence.js';
import {
  DMA_RESV_USAGE_READ,
  DMA_RESV_USAGE_WRITE,
  dmaResvAddFence,
  dmaResvLock,
  dmaResvReserveFences,
  dmaResvTestSignaled,
  dmaResvUnlock,
  dmaResvUsageRw,
} from '../../fence/dma-resv.js';
import { VGEM_FENCE_WRITE, drm_vgem_fence_attach, drm_vgem_fence_signal } from '../../uapi/drm.js';
import { type DrmFile, type DrmIoctlFunc, Idr, drmGemObjectLookup, drmGemObjectPut } from '../drm/index.js';

/** VGEM_FENCE_TIMEOUT: 10 s, after which a fence nobody signalled signals itself (prevents driver hangs). */
export const VGEM_FENCE_TIMEOUT_MS = 10_000;

/** One attached fence: the reference the file's table holds, and its expiry timer. */
interface VgemFence {
  readonly fence: DmaFence;
  readonly timer: NodeJS.Timeout;
}

/** struct vgem_file: the file's fences by id (ids from 1, never reused: a signalled id stays taken, empty). */
export interface VgemFile {
  readonly fences: Idr<VgemFence>;
}

const OPS = { driverName: 'vgem', timelineName: 'unbound' } as const;

/** vgem_fence_create: a new context, seqno 1, and the timer that signals it after VGEM_FENCE_TIMEOUT. */
function vgemFenceCreate(): VgemFence {
  const fence = dmaFenceInit(OPS, dmaFenceContextAlloc(1), 1);
  // The timer only signals: the table's reference keeps the fence alive until the timer is cleared with it.
  const timer = setTimeout(() => void dmaFenceSignal(fence), VGEM_FENCE_TIMEOUT_MS);
  timer.unref();
  return { fence, timer };
}

/** Signal (if still pending) and drop the table's reference: the end of every vgem fence's entry. */
function retire(f: VgemFence): void {
  clearTimeout(f.timer);
  dmaFenceSignal(f.fence);
  dmaFencePut(f.fence);
}

export function vgemFile(file: DrmFile): VgemFile {
  return file.driverPriv as VgemFile;
}

/** vgem_fence_open. */
export function vgemFenceOpen(file: DrmFile): void {
  file.driverPriv = { fences: new Idr<VgemFence>(1) } satisfies VgemFile;
}

/** vgem_fence_close: the file's pending fences are signalled, all its references dropped. */
export function vgemFenceClose(file: DrmFile): void {
  const vf = vgemFile(file);
  for (const [, f] of vf.fences.entries()) if (f) retire(f);
}

/**
 * DRM_IOCTL_VGEM_FENCE_ATTACH: flags other than VGEM_FENCE_WRITE or a non-zero pad → EINVAL; unknown handle →
 * ENOENT; a conflicting fence already there → EBUSY, nothing added (a writer needs every fence signalled, a reader
 * every writer's). Otherwise the fence joins the object's reservation as WRITE or READ and out_fence is its id.
 *
 * The resv lock is taken in this (the driver's) worker, around reserve + add, as vgem does.
 */
export const vgemFenceAttachIoctl: DrmIoctlFunc = (_dev, data, file) => {
  const a = drm_vgem_fence_attach;
  const flags = data.getUint32(a.flags, true);
  if (flags & ~VGEM_FENCE_WRITE) throw new KernelError(E.EINVAL);
  if (data.getUint32(a.pad, true)) throw new KernelError(E.EINVAL);
  const obj = drmGemObjectLookup(file, data.getUint32(a.handle, true));
  if (!obj) throw new KernelError(E.ENOENT);
  try {
    const f = vgemFenceCreate();
    const write = (flags & VGEM_FENCE_WRITE) !== 0;
    /* Check for a conflicting fence */
    if (!dmaResvTestSignaled(obj.resv, dmaResvUsageRw(write))) {
      retire(f);
      throw new KernelError(E.EBUSY);
    }
    /* Expose the fence via the dma-buf */
    dmaResvLock(obj.resv);
    let ret: number;
    try {
      ret = dmaResvReserveFences(obj.resv, 1);
      if (!ret) dmaResvAddFence(obj.resv, f.fence, write ? DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ);
    } finally {
      dmaResvUnlock(obj.resv);
    }
    if (ret) {
      retire(f);
      throw new KernelError(-ret);
    }
    /* Record the fence in our idr for later signaling */
    data.setUint32(a.out_fence, vgemFile(file).fences.alloc(f), true);
    return 0;
  } finally {
    drmGemObjectPut(obj);
  }
};

/**
 * DRM_IOCTL_VGEM_FENCE_SIGNAL: flags ≠ 0 → EINVAL; an id never handed out, or already signalled through here →
 * ENOENT; a fence its timer had already signalled → signalled "again" and ETIMEDOUT.
 */
export const vgemFenceSignalIoctl: DrmIoctlFunc = (_dev, data, file) => {
  const s = drm_vgem_fence_signal;
  if (data.getUint32(s.flags, true)) throw new KernelError(E.EINVAL);
  const f = vgemFile(file).fences.replace(data.getUint32(s.fence, true), null); // ENOENT for an id never allocated
  if (!f) throw new KernelError(E.ENOENT);
  const expired = dmaFenceIsSignaled(f.fence);
  retire(f);
  if (expired) throw new KernelError(E.ETIMEDOUT);
  return 0;
};
