/**
 * drm_gem_shmem_helper.c: GEM objects backed by ordinary pages that appear on first touch — the first mmap, pin
 * (an importer's attach) or vmap allocates them (alloc_pages from the kernel), so an object created and never
 * touched costs no memory, however large. Imports wrap a foreign dma-buf's mapped table instead.
 */
import { KernelError, E, allocPages, freePages, type DmaBufAttachment, type PageRegion, type SgTable } from '../../driver/index.js';
import { warn } from '../../bug.js';
import { MAP_PRIVATE, MAP_TYPE, PAGE_SIZE } from '../../uapi/posix.js';
import { type DrmDevice, type DrmFile, GemObject, type GemObjectFuncs, drmGemHandleCreate, drmGemObjectPut } from './drm-gem.js';
import { drmPrimeGemDestroy } from './drm-prime.js';

/** struct drm_gem_shmem_object's state, in GemObject.priv. */
interface Shmem {
  region: PageRegion | null;
  pinCount: number;
  vmapUseCount: number;
}

function shmemOf(obj: GemObject): Shmem {
  return obj.priv as Shmem;
}

/** drm_gem_shmem_get_pages: the pages, allocated on first use (ENOMEM when the machine has none). */
function getPages(obj: GemObject): PageRegion {
  const s = shmemOf(obj);
  if (obj.importAttach) {
    const sg = obj.importSgt?.sgl[0];
    if (!sg) throw new KernelError(E.EINVAL);
    return sg.region;
  }
  if (!s.region) s.region = allocPages(obj.size);
  return s.region;
}

const shmemFuncs: GemObjectFuncs = {
  free(obj) {
    const s = shmemOf(obj);
    if (obj.importAttach) drmPrimeGemDestroy(obj);
    else {
      if (s.pinCount) warn(`drm_gem_shmem_free: WARN_ON(shmem->pages_pin_count) (object ${obj.id})`);
      if (s.region) freePages(s.region);
    }
    s.region = null;
    obj.release();
  },
  pin(obj) {
    getPages(obj);
    shmemOf(obj).pinCount++;
  },
  unpin(obj) {
    shmemOf(obj).pinCount--;
  },
  getSgTable(obj) {
    return [{ region: getPages(obj), offset: 0, length: obj.size }];
  },
  vmap(obj) {
    shmemOf(obj).vmapUseCount++;
    return { region: getPages(obj), offset: 0, length: obj.size };
  },
  vunmap(obj) {
    shmemOf(obj).vmapUseCount--;
  },
  mmap(obj, vma) {
    // drm_gem_shmem_mmap: is_cow_mapping() — a private mapping may be written (VM_MAYWRITE) but not shared.
    if (vma.flags !== undefined && (vma.flags & MAP_TYPE) === MAP_PRIVATE) throw new KernelError(E.EINVAL);
    if (vma.pgoff * PAGE_SIZE + vma.length > obj.size) throw new KernelError(E.EINVAL);
    const region = getPages(obj);
    return { region, offset: vma.pgoff * PAGE_SIZE };
  },
};

/**
 * drm_gem_shmem_create: an object of `size` bytes (page-aligned), no pages yet. ENOSPC for 0 bytes: the kernel
 * gives every shmem object its fake mmap offset at creation, and a 0-page node fits nowhere (drm_mm_insert_node).
 */
export function drmGemShmemCreate(dev: DrmDevice, size: number): GemObject {
  if (size === 0) throw new KernelError(E.ENOSPC);
  const obj = new GemObject(dev, Math.ceil(size / PAGE_SIZE) * PAGE_SIZE, shmemFuncs);
  obj.priv = { region: null, pinCount: 0, vmapUseCount: 0 } satisfies Shmem;
  return obj;
}

/**
 * drm_gem_shmem_dumb_create: pitch = ceil(width·bpp / 8) and size = PAGE_ALIGN(pitch·height), both in the kernel's
 * 32-bit arithmetic, then an object and a handle for it.
 */
export function drmGemShmemDumbCreate(file: DrmFile, dev: DrmDevice, args: { width: number; height: number; bpp: number; handle: number; pitch: number; size: number }): void {
  const pageAlign32 = (x: number): number => ((x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) >>> 0;
  // DIV_ROUND_UP(width * bpp, 8) in u32: the product wraps, and so does the + 7 (a product ≥ 0xfffffff9 gives 0).
  args.pitch = ((Math.imul(args.width, args.bpp) + 7) >>> 0) >>> 3;
  args.size = pageAlign32(Math.imul(args.pitch, args.height) >>> 0);
  const obj = drmGemShmemCreate(dev, args.size);
  args.handle = drmGemHandleCreate(file, obj);
  drmGemObjectPut(obj);
}

/** drm_gem_shmem_prime_import_sg_table: an object over a foreign dma-buf's pages, sharing its reservation object. */
export function drmGemShmemPrimeImportSgTable(dev: DrmDevice, att: DmaBufAttachment, sgt: SgTable): GemObject {
  const obj = new GemObject(dev, att.dmabuf.size, shmemFuncs, att.dmabuf.resv);
  obj.priv = { region: null, pinCount: 0, vmapUseCount: 0 } satisfies Shmem;
  void sgt;
  return obj;
}
