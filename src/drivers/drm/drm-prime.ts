/**
 * PRIME (drm_prime.c): GEM objects exported as dma-bufs and dma-bufs imported as GEM objects, written only against
 * the driver API (dmabuf-sim/driver) — the part of a DRM driver a user copies to share buffers with everyone else.
 *
 * The rules a user sees: one dma-buf per object (the first export makes it, later exports from any file return
 * new fds of it); one handle per dma-buf per file (the file's lookup table is filled by imports and exports, so a
 * self-import returns the exporting handle); a dma-buf this device exported comes back as the object itself; a
 * foreign one is attached as this device and mapped once, for as long as the object lives.
 */
import {
  KernelError,
  E,
  DMA_BIDIRECTIONAL,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufExport,
  dmaBufFd,
  dmaBufGet,
  dmaBufMapAttachmentUnlocked,
  dmaBufPut,
  dmaBufUnmapAttachmentUnlocked,
  getDmaBuf,
  type DmaBuf,
  type DmaBufOps,
} from '../../driver/index.js';
import { warn } from '../../bug.js';
import { DRM_CLOEXEC, DRM_RDWR } from '../../uapi/drm.js';
import {
  type DrmDevice,
  type DrmFile,
  type GemObject,
  drmGemHandleCreate,
  drmGemObjectGet,
  drmGemObjectLookup,
  drmGemObjectPut,
  primeAddBufHandle,
  primeLookupBufByHandle,
  primeLookupBufHandle,
} from './drm-gem.js';

/**
 * drm_gem_prime_dmabuf_ops: the dma_buf_ops of every GEM export. They run in this (the exporter's) worker whoever
 * triggered them: an importer's attach pins the pages, its map gets them, a process's mmap of the dma-buf maps
 * them, the last put of the dma-buf drops the object reference the export took.
 */
export const drmGemPrimeDmabufOps: DmaBufOps<GemObject> = {
  attach(buf) {
    const obj = buf.priv!;
    obj.funcs.pin?.(obj); // drm_gem_map_attach → drm_gem_pin
  },
  detach(buf) {
    const obj = buf.priv!;
    obj.funcs.unpin?.(obj);
  },
  mapDmaBuf(att) {
    const obj = att.dmabuf.priv as GemObject;
    return obj.funcs.getSgTable(obj);
  },
  unmapDmaBuf() {
    // drm_gem_unmap_dma_buf: dma_unmap_sgtable + sg_free_table; the pages stay (pinned by the attachment).
  },
  release(buf) {
    // drm_gem_dmabuf_release: the reference drm_gem_dmabuf_export took.
    drmGemObjectPut(buf.priv!);
  },
  mmap(buf, vma) {
    const obj = buf.priv!;
    return obj.funcs.mmap(obj, vma);
  },
  vmap(buf) {
    const obj = buf.priv!;
    return obj.funcs.vmap(obj);
  },
  vunmap(buf) {
    const obj = buf.priv!;
    obj.funcs.vunmap(obj);
  },
};

/** Whether `buf` is a dma-buf this worker exported from a GEM object of `dev` (drm_gem_prime_import_dev's test). */
function ownGemObject(dev: DrmDevice, buf: DmaBuf): GemObject | null {
  if (buf.ops !== drmGemPrimeDmabufOps) return null;
  const obj = buf.priv as GemObject | undefined;
  return obj && obj.dev === dev ? obj : null;
}

/**
 * drm_gem_prime_export: a new dma-buf over the object (exp_name "drm", the object's size and reservation object,
 * the file mode from DRM_RDWR). The dma-buf holds a reference to the object until its release.
 */
function drmGemPrimeExport(obj: GemObject, flags: number): DmaBuf {
  const buf = dmaBufExport<GemObject>({ ops: drmGemPrimeDmabufOps, size: obj.size, flags, priv: obj, expName: 'drm', resv: obj.resv });
  drmGemObjectGet(obj);
  return buf;
}

/**
 * drm_gem_prime_handle_to_dmabuf: the dma-buf of a handle, with a reference for the caller. ENOENT for an unknown
 * handle (or one whose object lost its last handle meanwhile).
 */
function handleToDmabuf(file: DrmFile, handle: number, flags: number): DmaBuf {
  const obj = drmGemObjectLookup(file, handle);
  if (!obj) throw new KernelError(E.ENOENT);
  try {
    let buf = primeLookupBufByHandle(file, handle);
    if (buf) {
      getDmaBuf(buf);
      return buf;
    }
    if (obj.importAttach) {
      buf = obj.importAttach.dmabuf; // re-export the original imported object
      getDmaBuf(buf);
    } else if (obj.dmaBuf) {
      buf = obj.dmaBuf;
      getDmaBuf(buf);
    } else {
      // export_and_register_object
      if (obj.handleCount === 0) throw new KernelError(E.ENOENT);
      buf = drmGemPrimeExport(obj, flags);
      obj.dmaBuf = buf;
      getDmaBuf(buf); // the cached reference, dropped with the object's last handle
    }
    // If we've exported this buffer then cheat and add it to the import list so we get the correct handle back.
    primeAddBufHandle(file, buf, handle);
    return buf;
  } finally {
    drmGemObjectPut(obj);
  }
}

/**
 * DRM_IOCTL_PRIME_HANDLE_TO_FD: flags ⊄ DRM_CLOEXEC | DRM_RDWR → EINVAL; the new fd is installed in the calling
 * process's table (dma_buf_fd in the caller's context), O_CLOEXEC as asked; the buffer's access mode is the first
 * export's.
 */
export function drmPrimeHandleToFd(file: DrmFile, handle: number, flags: number): number {
  if (flags & ~(DRM_CLOEXEC | DRM_RDWR)) throw new KernelError(E.EINVAL);
  const buf = handleToDmabuf(file, handle, flags);
  try {
    return dmaBufFd(buf, flags);
  } catch (e) {
    dmaBufPut(buf);
    throw e;
  }
}

/**
 * drm_gem_prime_import_dev: the object of a dma-buf. Our own export gives the object itself (a GEM reference, not
 * a dma-buf one); a foreign dma-buf is attached as this device, referenced and mapped bidirectionally, and the
 * driver wraps the table in a new object sharing the dma-buf's reservation object.
 */
function drmGemPrimeImport(dev: DrmDevice, buf: DmaBuf): GemObject {
  const own = ownGemObject(dev, buf);
  if (own) return drmGemObjectGet(own);
  if (!dev.driver.importSgTable) throw new KernelError(E.EINVAL);
  const att = dmaBufAttach(buf, { name: dev.deviceName });
  getDmaBuf(buf);
  let sgt;
  try {
    sgt = dmaBufMapAttachmentUnlocked(att, DMA_BIDIRECTIONAL);
  } catch (e) {
    dmaBufDetach(buf, att);
    dmaBufPut(buf);
    throw e;
  }
  try {
    const obj = dev.driver.importSgTable(dev, att, sgt);
    obj.importAttach = att;
    obj.importSgt = sgt;
    return obj;
  } catch (e) {
    dmaBufUnmapAttachmentUnlocked(att, sgt, DMA_BIDIRECTIONAL);
    dmaBufDetach(buf, att);
    dmaBufPut(buf);
    throw e;
  }
}

/** drm_prime_gem_destroy: an imported object's end — unmap, detach, and the reference the import took. */
export function drmPrimeGemDestroy(obj: GemObject): void {
  const att = obj.importAttach;
  if (!att) return;
  if (obj.importSgt) dmaBufUnmapAttachmentUnlocked(att, obj.importSgt, DMA_BIDIRECTIONAL);
  const buf = att.dmabuf;
  dmaBufDetach(buf, att);
  dmaBufPut(buf);
  obj.importAttach = null;
  obj.importSgt = null;
}

/**
 * DRM_IOCTL_PRIME_FD_TO_HANDLE: the file's handle for the dma-buf behind `fd` (in the calling process): the one it
 * already has (import or export), else a new handle of the imported object. dma_buf_get's EBADF / EINVAL.
 */
export function drmPrimeFdToHandle(dev: DrmDevice, file: DrmFile, fd: number): number {
  const buf = dmaBufGet(fd);
  try {
    const known = primeLookupBufHandle(file, buf);
    if (known !== null) return known;
    /* never seen this one, need to import */
    const obj = drmGemPrimeImport(dev, buf);
    if (obj.dmaBuf) {
      if (obj.dmaBuf.ino !== buf.ino) warn(`drm_gem_prime_fd_to_handle: WARN_ON(obj->dma_buf != dma_buf)`);
    } else {
      obj.dmaBuf = buf;
      getDmaBuf(buf);
    }
    const handle = drmGemHandleCreate(file, obj);
    drmGemObjectPut(obj);
    primeAddBufHandle(file, buf, handle);
    return handle;
  } finally {
    dmaBufPut(buf);
  }
}
