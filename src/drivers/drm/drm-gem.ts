/**
 * The DRM core's object layer (drm_gem.c, drm_vma_manager.c, drm_file.c): a DRM device and its open files, GEM
 * objects with their refcounts and handle counts, per-file handle namespaces, flink names, fake mmap offsets and
 * mmap of the card fd. Runs in the driver's worker; a driver (vgem) builds on it through DrmDriverDesc.
 *
 * Locking: a driver worker serves one file op at a time, so the kernel's prime.lock, object_name_lock and
 * table_lock have nothing to exclude here; the order of every step is the kernel's, so what a racing second
 * thread of a process observes (a handle gone between two ioctls) is what Linux shows it.
 */
import { KernelError, E, dmaBufPut, getDmaBuf, type DmaBuf, type DmaBufAttachment, type PageRegion, type SgTable, type SgRange, type VmapRange } from '../../driver/index.js';
import { warn } from '../../bug.js';
import { type DmaResv, dmaResvFini, dmaResvInit } from '../../fence/dma-resv.js';
import { DRM_FILE_PAGE_OFFSET_SIZE, DRM_FILE_PAGE_OFFSET_START } from '../../uapi/drm.js';
import { PAGE_SIZE } from '../../uapi/posix.js';

/** Which minor a file was opened on: the primary node (/dev/dri/cardN) or the render node (renderD128+N). */
export type DrmMinorType = 'primary' | 'render';

/** An ioctl handler of the core or the driver: `data` is the kernel copy of the struct (drm_ioctl's kdata). */
export type DrmIoctlFunc = (dev: DrmDevice, data: DataView, file: DrmFile, user: DrmUserMemory) => number;

/** Permission flags of drm_ioctl_desc (include/drm/drm_ioctl.h). */
export const DRM_AUTH = 0x1;
export const DRM_MASTER = 0x2;
export const DRM_ROOT_ONLY = 0x4;
export const DRM_UNLOCKED = 0x10;
export const DRM_RENDER_ALLOW = 0x20;

/** struct drm_ioctl_desc: the cmd the table was built with (its direction and size count), the handler, flags. */
export interface DrmIoctlDesc {
  readonly cmd: number;
  readonly func: DrmIoctlFunc | null;
  readonly flags: number;
  readonly name: string;
}

/**
 * The caller's memory as an ioctl sees it: the process's argument buffer (user pointers are offsets into it, see
 * src/uapi/drm.ts). copy_to_user / copy_from_user fail with EFAULT outside it.
 */
export class DrmUserMemory {
  constructor(readonly bytes: Uint8Array | null) {}
  copyToUser(offset: number, src: Uint8Array): void {
    if (!this.bytes || offset < 0 || offset + src.length > this.bytes.length) throw new KernelError(E.EFAULT);
    this.bytes.set(src, offset);
  }
  copyFromUser(offset: number, len: number): Uint8Array {
    if (!this.bytes || offset < 0 || offset + len > this.bytes.length) throw new KernelError(E.EFAULT);
    return this.bytes.slice(offset, offset + len);
  }
}

/** struct drm_gem_object_funcs: what a GEM object's backing store does (drm_gem_shmem implements them). */
export interface GemObjectFuncs {
  /** The last reference is gone: drop the pages (or the import) and drmGemObjectRelease(obj). */
  free(obj: GemObject): void;
  /** drm_gem_map_attach → pin: the pages must exist and stay while an importer is attached. */
  pin?(obj: GemObject): void;
  unpin?(obj: GemObject): void;
  /** The pages for an importer's map. */
  getSgTable(obj: GemObject): readonly SgRange[];
  vmap(obj: GemObject): VmapRange;
  vunmap(obj: GemObject): void;
  /**
   * Where a mapping of the object comes from (card mmap and dma-buf mmap); EINVAL for a copy-on-write one
   * (`flags` of the card mmap: MAP_PRIVATE; the dma-buf path does not pass them).
   */
  mmap(obj: GemObject, vma: { readonly pgoff: number; readonly length: number; readonly flags?: number }): { region: PageRegion; offset: number };
}

let nextObjectId = 1;

/**
 * struct drm_gem_object. `refcount` counts kernel references (handles hold one between them, a dma-buf exported
 * from the object one, an mmap none here: see drmGemMmap); `handleCount` counts handles in every file.
 */
export class GemObject {
  /** A debugging id (creation order), not a uAPI value. */
  readonly id = nextObjectId++;
  refcount = 1;
  handleCount = 0;
  /** flink name, 0 for none. */
  name = 0;
  /** The object's dma-buf: the cached export, or the imported buffer (obj->dma_buf), with a reference of its own. */
  dmaBuf: DmaBuf | null = null;
  /** An import: the attachment to the foreign dma-buf and its mapped table (obj->import_attach, shmem->sgt). */
  importAttach: DmaBufAttachment | null = null;
  importSgt: SgTable | null = null;
  /** The fake mmap offset (drm_vma_offset_node): start and length in pages, the files allowed to map it. */
  vmaNode: { start: number; pages: number } | null = null;
  readonly vmaAllowed = new Map<DrmFile, number>();
  /** obj->resv: the object's own reservation object, or an imported dma-buf's. */
  resv: DmaResv;
  private readonly ownResv: DmaResv | null;
  /** Driver data (vgem: the shmem pages). */
  priv: unknown = null;
  constructor(
    readonly dev: DrmDevice,
    readonly size: number,
    readonly funcs: GemObjectFuncs,
    resv: DmaResv | null = null,
  ) {
    this.ownResv = resv ? null : dmaResvInit(`${dev.driver.name} gem object ${this.id}`);
    this.resv = resv ?? this.ownResv!;
    dev.objectCount++;
  }

  /** drm_gem_object_release: the mmap offset and the object's own reservation object go. */
  release(): void {
    this.dev.vma.remove(this);
    if (this.ownResv) dmaResvFini(this.ownResv);
    this.dev.objectCount--;
  }
}

/** drm_gem_object_get. */
export function drmGemObjectGet(obj: GemObject): GemObject {
  if (obj.refcount <= 0) warn(`drm_gem_object_get: refcount_t: addition on 0; use-after-free (object ${obj.id})`);
  obj.refcount++;
  return obj;
}

/** drm_gem_object_put: the last reference frees the object (its funcs.free). */
export function drmGemObjectPut(obj: GemObject): void {
  if (obj.refcount <= 0) {
    warn(`drm_gem_object_put: refcount_t: underflow; use-after-free (object ${obj.id})`);
    return;
  }
  if (--obj.refcount === 0) obj.funcs.free(obj);
}

/**
 * The fake mmap offset space (drm_vma_offset_manager over a drm_mm): [DRM_FILE_PAGE_OFFSET_START, +SIZE) pages,
 * nodes placed best fit (the smallest hole that fits, the lowest such), as drm_mm_insert_node's default mode.
 */
export class VmaOffsetManager {
  private readonly nodes: GemObject[] = [];

  /** drm_gem_create_mmap_offset: idempotent; ENOSPC when no hole fits (or a 0-page object). */
  add(obj: GemObject): void {
    if (obj.vmaNode) return;
    const pages = Math.ceil(obj.size / PAGE_SIZE);
    if (pages === 0) throw new KernelError(E.ENOSPC);
    const end = DRM_FILE_PAGE_OFFSET_START + DRM_FILE_PAGE_OFFSET_SIZE;
    let best = -1;
    let bestSize = Infinity;
    let at = DRM_FILE_PAGE_OFFSET_START;
    const consider = (holeEnd: number): void => {
      const hole = holeEnd - at;
      if (hole >= pages && hole < bestSize) {
        best = at;
        bestSize = hole;
      }
    };
    for (const n of this.nodes) {
      consider(n.vmaNode!.start);
      at = n.vmaNode!.start + n.vmaNode!.pages;
    }
    consider(end);
    if (best < 0) throw new KernelError(E.ENOSPC);
    obj.vmaNode = { start: best, pages };
    this.nodes.push(obj);
    this.nodes.sort((a, b) => a.vmaNode!.start - b.vmaNode!.start);
  }

  remove(obj: GemObject): void {
    if (!obj.vmaNode) return;
    const i = this.nodes.indexOf(obj);
    if (i >= 0) this.nodes.splice(i, 1);
    obj.vmaNode = null;
  }

  /** drm_vma_offset_exact_lookup_locked: the node starting at `start` and at least `pages` long. */
  exactLookup(start: number, pages: number): GemObject | null {
    for (const n of this.nodes) {
      const v = n.vmaNode!;
      if (start >= v.start && start < v.start + v.pages) return v.start === start && start + pages <= v.start + v.pages ? n : null;
    }
    return null;
  }
}

/** A lowest-free-id allocator from `base` (idr_alloc(idr, p, base, 0)); ids released with remove. */
export class Idr<T> {
  private readonly map = new Map<number, T | null>();
  /**
   * No id below this is free: the scan starts here, so ids kept allocated for a file's life (vgem's signalled
   * fences stay in the idr as NULL) cost O(1) amortised instead of a scan from `base` each time.
   */
  private lowestFree: number;
  constructor(base = 1) {
    this.lowestFree = base;
  }
  alloc(value: T | null): number {
    let id = this.lowestFree;
    while (this.map.has(id)) id++;
    this.map.set(id, value);
    this.lowestFree = id + 1;
    return id;
  }
  has(id: number): boolean {
    return this.map.has(id);
  }
  find(id: number): T | null {
    return this.map.get(id) ?? null;
  }
  /** idr_replace: the old value, or ENOENT (as ERR_PTR) when the id was never allocated. */
  replace(id: number, value: T | null): T | null {
    if (!this.map.has(id)) throw new KernelError(E.ENOENT);
    const old = this.map.get(id) ?? null;
    this.map.set(id, value);
    return old;
  }
  remove(id: number): void {
    if (this.map.delete(id) && id < this.lowestFree) this.lowestFree = id;
  }
  /** Entries in id order (idr_for_each). */
  entries(): [number, T | null][] {
    return [...this.map.entries()].sort((a, b) => a[0] - b[0]);
  }
  get size(): number {
    return this.map.size;
  }
}

/** One entry of a file's PRIME lookup (struct drm_prime_member): a dma-buf (with a reference) and its handle. */
interface PrimeMember {
  readonly buf: DmaBuf;
  readonly handle: number;
}

let nextFileId = 1;

/** struct drm_file: one open of a DRM node. */
export class DrmFile {
  readonly id = nextFileId++;
  readonly objects = new Idr<GemObject>(1);
  /** drm_prime_file_private: dma-buf ↔ handle, filled by imports and by exports (self-import gets the handle). */
  readonly prime: PrimeMember[] = [];
  /** Processes run as root (CAP_SYS_ADMIN): every primary client is authenticated, as IGT's are. */
  authenticated: boolean;
  /** Driver data (file->driver_priv). */
  driverPriv: unknown = null;
  constructor(
    readonly dev: DrmDevice,
    readonly minor: DrmMinorType,
    /** The process that opened it (for debugfs clients). */
    readonly pid: number,
  ) {
    this.authenticated = minor === 'primary';
  }
  get isRender(): boolean {
    return this.minor === 'render';
  }
  get isMaster(): boolean {
    return this.dev.master === this;
  }
}

/** What a DRM driver tells the core (struct drm_driver, the parts the model uses). */
export interface DrmDriverDesc {
  readonly name: string;
  readonly desc: string;
  readonly date: string;
  readonly major: number;
  readonly minor: number;
  readonly patchlevel: number;
  /** DRIVER_RENDER: a render node exists. DRIVER_MODESET / DRIVER_SYNCOBJ: the KMS and syncobj ioctls work. */
  readonly features: { readonly render: boolean; readonly modeset: boolean; readonly syncobj: boolean };
  /** Driver ioctls, index = nr − DRM_COMMAND_BASE. */
  readonly ioctls: readonly DrmIoctlDesc[];
  /** drm_driver.open: a file was opened (after the core set it up). */
  open?(dev: DrmDevice, file: DrmFile): void;
  /** drm_driver.postclose: the file is going (after its handles were released). */
  postclose?(dev: DrmDevice, file: DrmFile): void;
  /** dumb_create: fill in handle, pitch and size of the zeroed-out args (after the core's checks). */
  dumbCreate?(file: DrmFile, dev: DrmDevice, args: { width: number; height: number; bpp: number; handle: number; pitch: number; size: number }): void;
  /** gem_prime_import_sg_table: a GEM object for a foreign dma-buf's mapped table. */
  importSgTable?(dev: DrmDevice, att: DmaBufAttachment, sgt: SgTable): GemObject;
}

/** struct drm_device. */
export class DrmDevice {
  readonly vma = new VmaOffsetManager();
  /** dev->object_name_idr: flink names. */
  readonly names = new Idr<GemObject>(1);
  /** The current DRM master (the first primary open while none exists). */
  master: DrmFile | null = null;
  readonly files = new Set<DrmFile>();
  /** Live GEM objects (IGT's object count; leak checks). */
  objectCount = 0;
  /** SET_VERSION's dev->if_version. */
  ifVersion = 0;
  constructor(
    readonly driver: DrmDriverDesc,
    /** dev->dev: the device importers attach as (bufinfo's "Attached Devices"). */
    readonly deviceName: string,
  ) {}
}

// ---- handles ------------------------------------------------------------------------------------------------------

/**
 * drm_gem_handle_create_tail: a new handle (lowest free ≥ 1) of `file` for `obj`. The first handle of an object
 * takes the handles' reference; the file may now mmap the object (drm_vma_node_allow).
 */
export function drmGemHandleCreate(file: DrmFile, obj: GemObject): number {
  if (obj.handleCount++ === 0) drmGemObjectGet(obj);
  const handle = file.objects.alloc(obj);
  obj.vmaAllowed.set(file, (obj.vmaAllowed.get(file) ?? 0) + 1);
  return handle;
}

/** drm_gem_object_lookup: the object behind a handle, with a reference; null for none. */
export function drmGemObjectLookup(file: DrmFile, handle: number): GemObject | null {
  const obj = file.objects.find(handle);
  return obj ? drmGemObjectGet(obj) : null;
}

/** drm_gem_object_handle_put_unlocked: the last handle drops the flink name and the cached dma-buf. */
function handlePut(obj: GemObject): void {
  if (obj.handleCount === 0) {
    warn(`drm_gem_object_handle_put: WARN_ON(READ_ONCE(obj->handle_count) == 0) (object ${obj.id})`);
    return;
  }
  if (--obj.handleCount === 0) {
    if (obj.name) {
      obj.dev.names.remove(obj.name);
      obj.name = 0;
    }
    // drm_gem_object_exported_dma_buf_free: the dma-buf keeps the object alive, not the other way round.
    const buf = obj.dmaBuf;
    obj.dmaBuf = null;
    if (buf) dmaBufPut(buf);
    drmGemObjectPut(obj);
  }
}

/** drm_gem_object_release_handle: the PRIME lookup entry of the handle, the mmap permission, the handle's count. */
function releaseHandle(file: DrmFile, handle: number, obj: GemObject): void {
  primeRemoveBufHandle(file, handle);
  const n = (obj.vmaAllowed.get(file) ?? 0) - 1;
  if (n > 0) obj.vmaAllowed.set(file, n);
  else obj.vmaAllowed.delete(file);
  handlePut(obj);
}

/** drm_gem_handle_delete (GEM_CLOSE, DESTROY_DUMB): EINVAL for a handle the file does not have. */
export function drmGemHandleDelete(file: DrmFile, handle: number): void {
  let obj: GemObject | null;
  try {
    obj = file.objects.replace(handle, null);
  } catch {
    throw new KernelError(E.EINVAL);
  }
  if (!obj) throw new KernelError(E.EINVAL);
  releaseHandle(file, handle, obj);
  file.objects.remove(handle);
}

/** drm_gem_release: a closing file drops every handle, in handle order. */
export function drmGemRelease(file: DrmFile): void {
  for (const [handle, obj] of file.objects.entries()) {
    if (obj) releaseHandle(file, handle, obj);
    file.objects.remove(handle);
  }
}

// ---- PRIME lookup (drm_prime.c's per-file cache) -------------------------------------------------------------------

/** drm_prime_add_buf_handle: remembers buf ↔ handle for the file, with a reference on the dma-buf. */
export function primeAddBufHandle(file: DrmFile, buf: DmaBuf, handle: number): void {
  getDmaBuf(buf);
  file.prime.push({ buf, handle });
}

/** drm_prime_lookup_buf_handle: the file's handle for this dma-buf, or null. */
export function primeLookupBufHandle(file: DrmFile, buf: DmaBuf): number | null {
  for (const m of file.prime) if (m.buf.ino === buf.ino) return m.handle;
  return null;
}

/** drm_prime_lookup_buf_by_handle. */
export function primeLookupBufByHandle(file: DrmFile, handle: number): DmaBuf | null {
  for (const m of file.prime) if (m.handle === handle) return m.buf;
  return null;
}

/** drm_prime_remove_buf_handle: forgets the handle's entry and drops its dma-buf reference. */
function primeRemoveBufHandle(file: DrmFile, handle: number): void {
  const i = file.prime.findIndex((m) => m.handle === handle);
  if (i < 0) return;
  const [m] = file.prime.splice(i, 1);
  dmaBufPut(m!.buf);
}

// ---- mmap of the card fd -------------------------------------------------------------------------------------------

/** drm_gem_create_mmap_offset + drm_vma_node_offset_addr: the object's fake offset in bytes. */
export function drmGemMmapOffset(obj: GemObject): number {
  obj.dev.vma.add(obj);
  return obj.vmaNode!.start * PAGE_SIZE;
}

/**
 * drm_gem_mmap: a mapping of the card fd must start exactly at an object's fake offset and fit in it (EINVAL
 * otherwise), and the file must hold a handle to the object (EACCES). The object's funcs.mmap names the pages.
 *
 * Model note: Linux's VMA holds a GEM reference until munmap (drm_gem_vm_open/close); the driver API has no vma
 * close yet, so the mapping holds the *pages* (the broker's region reference) but not the object: after GEM_CLOSE
 * the data stays mapped and correct, while the fake offset may be handed to a new object.
 */
export function drmGemMmap(file: DrmFile, vma: { readonly pgoff: number; readonly length: number; readonly flags: number }): { region: PageRegion; offset: number } {
  const pages = Math.ceil(vma.length / PAGE_SIZE);
  const obj = file.dev.vma.exactLookup(vma.pgoff, pages);
  if (!obj) throw new KernelError(E.EINVAL);
  drmGemObjectGet(obj);
  try {
    if (!obj.vmaAllowed.has(file)) throw new KernelError(E.EACCES);
    if (obj.size < vma.length) throw new KernelError(E.EINVAL);
    return obj.funcs.mmap(obj, { pgoff: 0, length: vma.length, flags: vma.flags });
  } finally {
    drmGemObjectPut(obj);
  }
}

