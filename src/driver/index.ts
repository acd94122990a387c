/**
 * dmabuf-sim/driver: the kernel API a driver worker programs against — character devices with file operations,
 * and the dma-buf exporter/importer API (export, fd, get/put, attach, map, CPU access, vmap, dynamic importers) —
 * with driver-side proxies for struct dma_buf, dma_buf_attachment, sg_table and iosys_map.
 *
 * A driver module exports `probe(drv)`. Every function here is a synchronous downcall into the broker (the dma-buf
 * core lives there); the broker calls back into this worker for the file ops, for exporter ops of buffers this
 * driver exported and for move_notify of its dynamic attachments — also while one of these calls waits (nested
 * frames). Errors are thrown KernelErrors with Linux's errno, as C returns -errno.
 */
import { KernelError } from '../errors.js';
import { BUG, printLine, setWarningSink, warn } from '../bug.js';
import { validateFd, validateFlags, validateInt, validateInteger, validatePath, validateString, validateWord } from '../validate.js';
import { E } from '../uapi/errno.js';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE, type DmaDataDirection } from '../kernel/dma-direction.js'; // a leaf file of constants: the one import of src/kernel/ a driver makes
import { IoMem, IosysMap } from '../shm/iosys-map.js';
import { Mutex, type LockHandle } from '../locking/index.js';
import { dmaResvFromId, dmaResvHeld, dmaResvId, dmaResvLock, dmaResvUnlock, type DmaResv } from '../fence/dma-resv.js';
export * from '../fence/dma-resv.js';
import {
  DOWN,
  F_IN_LEN,
  F_OUT_LEN,
  F_PID,
  F_RFLAGS,
  OPS_BIT,
  RF_WOULD_BLOCK,
  UP,
  getJson,
  putJson,
  type FrameViews,
} from '../shm/driver-channel.js';
import { drt } from './runtime.js';

export { KernelError } from '../errors.js';
export { E } from '../uapi/errno.js';
export { DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_NONE, type DmaDataDirection };
export { IoMem, IosysMap };

const enc = new TextEncoder();
const dec = new TextDecoder();

// ---- memory ----------------------------------------------------------------------------------------------------

/** Pages the kernel gave this driver (alloc_pages): a SharedArrayBuffer range with a kernel-wide id. */
export interface PageRegion {
  readonly id: number;
  readonly size: number;
  readonly sab: SharedArrayBuffer;
  /** The whole region as bytes (system memory). */
  readonly bytes: Uint8Array;
}

const regionCache = new Map<number, PageRegion>();

/** The driver's view of region `id` (its SAB arrives on the port with the call that named it). */
function regionOf(id: number): PageRegion {
  let r = regionCache.get(id);
  if (!r) {
    const sab = drt().region(id);
    r = { id, size: sab.byteLength, sab, bytes: new Uint8Array(sab) };
    regionCache.set(id, r);
  }
  return r;
}

/** alloc_pages: `size` bytes (rounded up to pages) of zeroed memory, owned by this driver until freePages. */
export function allocPages(size: number): PageRegion {
  validateInteger(size, 'size', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (size <= 0) throw new KernelError(E.EINVAL, `allocPages size ${size}`);
  const r = drt().call(DOWN.alloc_pages, [size]);
  return regionOf(r.ret);
}

/** __free_pages: gives the pages back; buffers whose sg tables or mappings name them keep them alive. */
export function freePages(region: PageRegion): void {
  drt().call(DOWN.free_pages, [region.id]);
  regionCache.delete(region.id);
  drt().forgetRegion(region.id);
}

// ---- devices and file operations -------------------------------------------------------------------------------

/** struct device as the dma-buf core sees it: a name (bufinfo's "Attached Devices" lists it). */
export interface Device {
  readonly name: string;
}

/** The calling context of a file op: the process on whose behalf it runs (dma_buf_fd / dma_buf_get use its fds). */
export interface CallContext {
  readonly pid: number;
}

/** struct file of a driver's device, as the driver sees it (one per open). */
export interface DriverFile {
  readonly id: number;
  readonly path: string;
  readonly flags: number;
  /** The driver's per-open state (file->private_data). */
  privateData: unknown;
}

/** An ioctl's argument: the caller's struct bytes (a copy, copied back to the caller after the op — also when it throws, as drm_ioctl copies out before returning its error) and its value. */
export interface IoctlArg {
  /** null when the caller passed no struct (an integer argument). */
  readonly bytes: Uint8Array | null;
  readonly value: number;
}

/** A driver wait queue (wait_queue_head_t): a file op that must sleep returns `new WouldBlock(q)`; wake() retries it. */
export class WaitQueueHead {
  private static next = 1;
  readonly id = WaitQueueHead.next++;
  /** wake_up_all: every call parked on this queue is retried, every poller re-polls. */
  wake(): void {
    drt().call(DOWN.wake_up, [this.id]);
  }
}

/** A file op's answer "I would sleep on `queue`": the broker parks the call and retries it when the queue wakes. */
export class WouldBlock {
  constructor(readonly queue: WaitQueueHead) {}
}

/** poll_table: the queues a poll op would sleep on (their wake makes the broker poll again). */
export interface PollTable {
  wait(q: WaitQueueHead): void;
  readonly key: number;
}

/** struct file_operations of a driver's character device; every op runs in this worker. */
export interface FileOps {
  open?(file: DriverFile, ctx: CallContext): void;
  release?(file: DriverFile): void;
  ioctl?(file: DriverFile, cmd: number, arg: IoctlArg, ctx: CallContext): number | WouldBlock;
  /** Where the mapping of [pgoff, +length) comes from: a region of this driver and the offset in it. */
  mmap?(file: DriverFile, vma: { readonly pgoff: number; readonly length: number; readonly prot: number; readonly flags: number }, ctx: CallContext): { region: PageRegion; offset: number };
  poll?(file: DriverFile, pt: PollTable): number;
  read?(file: DriverFile, count: number, ctx: CallContext): Uint8Array | WouldBlock;
}

/** What probe() receives. */
export interface Driver {
  readonly name: string;
  /** register_chrdev + device_create: `path` (e.g. /dev/dri/card0) opens a file served by `fops`. EEXIST when taken. */
  registerChrdev(path: string, fops: FileOps): void;
  unregisterChrdev(path: string): void;
}

interface Chrdev {
  readonly path: string;
  readonly fops: FileOps;
}
const chrdevs = new Map<string, Chrdev>();
const files = new Map<number, { file: DriverFile; dev: Chrdev }>();

export function makeDriver(name: string): Driver {
  return {
    name,
    registerChrdev(path: string, fops: FileOps): void {
      validatePath(path);
      if (!path.startsWith('/dev/')) throw new KernelError(E.EINVAL, `device path ${path}`);
      drt().call(DOWN.register_chrdev, [], enc.encode(path));
      chrdevs.set(path, { path, fops });
    },
    unregisterChrdev(path: string): void {
      drt().call(DOWN.unregister_chrdev, [], enc.encode(path));
      chrdevs.delete(path);
    },
  };
}

// ---- dma-buf proxies ---------------------------------------------------------------------------------------------

/**
 * struct dma_buf_ops of a driver exporter. Ops run in this worker, whichever worker triggered them. Required:
 * mapDmaBuf, unmapDmaBuf, release; pin and unpin both or neither; cacheSgtMapping not with pin/unpin (the core's
 * checks, EINVAL with a WARN).
 */
export interface DmaBufOps<P = unknown> {
  readonly cacheSgtMapping?: boolean;
  attach?(buf: DmaBuf<P>, att: DmaBufAttachment): void;
  detach?(buf: DmaBuf<P>, att: DmaBufAttachment): void;
  pin?(att: DmaBufAttachment): void;
  unpin?(att: DmaBufAttachment): void;
  /** The pages backing the buffer, as page ranges of this driver's regions (the core adds the device addresses). */
  mapDmaBuf(att: DmaBufAttachment, dir: DmaDataDirection): readonly SgRange[];
  unmapDmaBuf(att: DmaBufAttachment, sgt: readonly SgRange[], dir: DmaDataDirection): void;
  release(buf: DmaBuf<P>): void;
  beginCpuAccess?(buf: DmaBuf<P>, dir: DmaDataDirection): void;
  endCpuAccess?(buf: DmaBuf<P>, dir: DmaDataDirection): void;
  /** A process's mmap of the dma-buf: [pgoff, +length) of the buffer, its PROT_* and MAP_* (MAP_PRIVATE...). */
  mmap?(buf: DmaBuf<P>, vma: { readonly pgoff: number; readonly length: number; readonly prot: number; readonly flags: number }): { region: PageRegion; offset: number };
  /** The kernel mapping: a range of one region, system memory or (iomem: true) I/O memory. */
  vmap?(buf: DmaBuf<P>): VmapRange;
  vunmap?(buf: DmaBuf<P>): void;
}

/** One page range an exporter's map names. */
export interface SgRange {
  readonly region: PageRegion;
  readonly offset: number;
  readonly length: number;
}

export interface VmapRange {
  readonly region: PageRegion;
  readonly offset?: number;
  readonly length?: number;
  readonly iomem?: boolean;
}

/** struct dma_buf_attach_ops: a dynamic importer's callbacks (run in this worker). */
export interface DmaBufAttachOps {
  readonly allowPeer2peer?: boolean;
  moveNotify(att: DmaBufAttachment): void;
}

/** A driver's view of a struct dma_buf: its identity (the dma-buf inode number), size, exporter name. */
export class DmaBuf<P = unknown> {
  /** The exporter's private data (exporter side only). */
  priv: P | undefined;
  /** Exporter side: its ops. */
  ops: DmaBufOps<P> | null = null;
  /** The core's vmap lock (dmabuf->lock), a shared Mutex every caller takes in its own worker. */
  readonly lock: Mutex | null;
  /** The core's vmap result in this worker (the same object for every vmap while the count is up). */
  vmapPtr: IosysMap = IosysMap.NULL;
  vmapGen = 0;
  /** dmabuf->resv: the buffer's reservation object, in the machine's shared table (lock it, add and wait fences). */
  readonly resv: DmaResv;
  constructor(
    readonly ino: number,
    readonly size: number,
    readonly expName: string,
    lock: LockHandle | null,
    resvId: number,
  ) {
    this.lock = lock ? Mutex.from(lock) : null;
    this.resv = dmaResvFromId(resvId);
  }
}

/** struct dma_buf_attachment, as the importer (or, for its own buffers, the exporter) sees it. */
export class DmaBufAttachment {
  /** The exporter's per-attachment data (exporter side). */
  priv: unknown = null;
  /** Importer side: the core holds a table cached for it (made at attach, or a cache_sgt_mapping map), which
   *  dma_buf_detach unmaps under the reservation lock. */
  coreCached = false;
  constructor(
    readonly id: number,
    readonly dmabuf: DmaBuf,
    readonly dev: Device,
    /** The importer's ops (importer side, dynamic attachments). */
    readonly importerOps: DmaBufAttachOps | null,
    readonly importerPriv: unknown,
    readonly dynamic: boolean,
    readonly peer2peer: boolean,
  ) {}
}

/** One scatterlist entry of a mapped table: a page range and its address for the attached device. */
export interface Scatterlist {
  readonly region: PageRegion;
  readonly offset: number;
  readonly length: number;
  readonly dmaAddress: number;
}

/** struct sg_table as an importer gets it from dma_buf_map_attachment. */
export class SgTable {
  constructor(
    readonly id: number,
    readonly sgl: readonly Scatterlist[],
    /** The attachment it was mapped for. */
    readonly attId: number,
  ) {}
  get nents(): number {
    return this.sgl.length;
  }
  get length(): number {
    let n = 0;
    for (const s of this.sgl) n += s.length;
    return n;
  }
}

/** Buffers this worker knows, by inode number (one proxy per buffer per worker). */
const bufs = new Map<number, DmaBuf>();
/** Attachments this worker made (importer side) or was told of (exporter side), by id. */
const importerAtts = new Map<number, DmaBufAttachment>();
const exporterAtts = new Map<number, DmaBufAttachment>();
const sgts = new Map<number, SgTable>();
/** Exporter side: tables an exporter's map returned, by the key the core passes back to unmap. */
const exporterSgts = new Map<number, readonly SgRange[]>();
let nextExporterSgt = 1;

function proxyOf(ino: number, size: number, expName: string, resvId: number): DmaBuf {
  let b = bufs.get(ino);
  if (!b) {
    const lock = drt().lock(ino);
    b = new DmaBuf(ino, size, expName, lock, resvId);
    bufs.set(ino, b);
  }
  return b;
}

function checkBuf(buf: unknown, what: string): DmaBuf {
  if (!(buf instanceof DmaBuf)) {
    warn(`${what}: WARN_ON(!dmabuf)`);
    throw new KernelError(E.EINVAL);
  }
  return buf;
}

function checkAtt(att: unknown, what: string): DmaBufAttachment {
  if (!(att instanceof DmaBufAttachment)) {
    warn(`${what}: WARN_ON(!attach || !attach->dmabuf)`);
    throw new KernelError(E.EINVAL);
  }
  return att;
}

function checkDir(dir: unknown): DmaDataDirection {
  validateInt(dir, 'direction'); // an enum: any C int reaches the check below; 3.5 or a string cannot
  if (dir !== DMA_BIDIRECTIONAL && dir !== DMA_TO_DEVICE && dir !== DMA_FROM_DEVICE) {
    // valid_dma_direction(): WARN_ON(!valid_dma_direction(direction)) in dma_buf_map_attachment and the CPU-access
    // helpers; the model answers EINVAL (the C code would go on with a bogus direction).
    warn(`dma-buf: WARN_ON(!valid_dma_direction(${String(dir)}))`);
    throw new KernelError(E.EINVAL);
  }
  return dir;
}

export interface DmaBufExportInfo<P> {
  readonly ops: DmaBufOps<P>;
  readonly size: number;
  /** File flags (O_RDWR, O_CLOEXEC...): the access mode decides the file mode. Default O_RDWR. */
  readonly flags?: number;
  readonly priv: P;
  /** exp_name (default: this driver's name). */
  readonly expName?: string;
  /** exp_info->resv: the driver's own reservation object (dmaResvInit) shared with its buffer object. */
  readonly resv?: DmaResv;
}

/**
 * dma_buf_export: a new dma-buf whose ops run in this worker. The core checks the ops (EINVAL with a WARN, as
 * Linux). Returns the buffer holding one reference: hand it to dmaBufFd() or drop it with dmaBufPut().
 */
export function dmaBufExport<P>(info: DmaBufExportInfo<P>): DmaBuf<P> {
  const ops = info.ops;
  validateWord(info.size, 'info.size'); // a size_t: any C value goes on to the core's check
  if (info.expName !== undefined) validateString(info.expName, 'info.expName');
  if (info.flags !== undefined) validateFlags(info.flags, 'info.flags');
  if (typeof ops !== 'object' || ops === null) throw new KernelError(E.EINVAL, 'dma_buf_export: no ops');
  let bits = 0;
  for (const [name, bit] of [
    ['attach', OPS_BIT.attach],
    ['detach', OPS_BIT.detach],
    ['pin', OPS_BIT.pin],
    ['unpin', OPS_BIT.unpin],
    ['mapDmaBuf', OPS_BIT.map],
    ['unmapDmaBuf', OPS_BIT.unmap],
    ['release', OPS_BIT.release],
    ['beginCpuAccess', OPS_BIT.beginCpuAccess],
    ['endCpuAccess', OPS_BIT.endCpuAccess],
    ['mmap', OPS_BIT.mmap],
    ['vmap', OPS_BIT.vmap],
    ['vunmap', OPS_BIT.vunmap],
  ] as const) {
    if (typeof (ops as unknown as Record<string, unknown>)[name] === 'function') bits |= bit;
  }
  if (ops.cacheSgtMapping) bits |= OPS_BIT.cacheSgtMapping;
  const hasPriv = info.priv !== null && info.priv !== undefined ? 1 : 0;
  const expName = info.expName ?? drt().name;
  const resvArg = info.resv ? dmaResvId(info.resv) + 1 : 0;
  const r = drt().call(DOWN.export, [info.size, info.flags ?? 2, bits, hasPriv, resvArg], enc.encode(expName));
  const buf = proxyOf(r.ret, info.size, expName, r.res[2]! - 1) as DmaBuf<P>;
  buf.ops = ops;
  buf.priv = info.priv;
  return buf;
}

/** dma_buf_fd: installs the buffer in the calling process's fd table (consumes this driver's reference). */
export function dmaBufFd(buf: DmaBuf, flags: number): number {
  validateFlags(flags, 'flags'); // only O_CLOEXEC matters (get_unused_fd_flags); other C bits are ignored
  if (!(buf instanceof DmaBuf)) throw new KernelError(E.EINVAL);
  return drt().call(DOWN.fd, [buf.ino, flags]).ret;
}

/** dma_buf_get: the dma-buf behind the calling process's fd, with a reference. EBADF / EINVAL as Linux. */
export function dmaBufGet(fd: number): DmaBuf {
  validateFd(fd);
  const r = drt().call(DOWN.get, [fd]);
  return proxyOf(r.ret, r.res[1]!, dec.decode(r.data), r.res[2]! - 1);
}

/** get_dma_buf: one more reference. */
export function getDmaBuf(buf: DmaBuf): void {
  drt().call(DOWN.get_dma_buf, [checkBuf(buf, 'get_dma_buf').ino]);
}

/** dma_buf_put: drops one reference; the last one releases the buffer (the exporter's release runs in its worker). */
export function dmaBufPut(buf: DmaBuf): void {
  if (!(buf instanceof DmaBuf)) {
    warn('dma_buf_put: WARN_ON(!dmabuf || !dmabuf->file)');
    return;
  }
  drt().call(DOWN.put, [buf.ino]);
}

/** dma_buf_attach: a static importer's attachment of `dev`. The exporter may refuse (its errno). */
export function dmaBufAttach(buf: DmaBuf, dev: Device): DmaBufAttachment {
  return dmaBufDynamicAttach(buf, dev, null, null);
}

/**
 * Reservation objects (by id) whose lock the caller this worker is serving holds, with a nesting count: in Linux
 * an exporter's pin/map/unmap and an importer's move_notify run in the thread that holds the lock; here they run
 * in this worker on that thread's behalf, so the assertion below counts the caller's hold as this worker's.
 */
const callerHeldResv = new Map<number, number>();

/** Runs an upcall's op "under the caller's reservation lock" of `buf` (see callerHeldResv). */
function underCallersResv<T>(buf: DmaBuf, fn: () => T): T {
  const id = dmaResvId(buf.resv);
  callerHeldResv.set(id, (callerHeldResv.get(id) ?? 0) + 1);
  try {
    return fn();
  } finally {
    const n = callerHeldResv.get(id)! - 1;
    if (n === 0) callerHeldResv.delete(id);
    else callerHeldResv.set(id, n);
  }
}

/** dma_resv_assert_held(dmabuf->resv) in `what`: a WARN (lockdep_assert_held) when this worker does not hold it. */
function assertResvHeld(buf: DmaBuf, what: string): void {
  if (dmaResvHeld(buf.resv) || callerHeldResv.has(dmaResvId(buf.resv))) return;
  warn(`${what}: dma_resv_assert_held(dmabuf->resv): the reservation lock of dma-buf ino ${buf.ino} is not held`);
}

/** dma_resv_lock(dmabuf->resv, NULL) in this worker: held on return (a dead holder's is taken over, with a WARN). */
function resvLock(buf: DmaBuf): void {
  const r = dmaResvLock(buf.resv);
  if (r !== 0 && r !== -E.EOWNERDEAD) throw new KernelError(-r, 'dma_resv_lock');
}

/** An attachment this worker made and has not detached; a detached one is a use after free (WARN, EINVAL). */
function liveAtt(att: unknown, what: string): DmaBufAttachment {
  const a = checkAtt(att, what);
  if (importerAtts.get(a.id) !== a) {
    warn(`${what}: use of attachment ${a.id} after dma_buf_detach (use after free)`);
    throw new KernelError(E.EINVAL);
  }
  return a;
}

/**
 * dma_buf_dynamic_attach: with importer ops (moveNotify), a dynamic importer.
 *
 * Locking, in this worker: the buffer's lock (dmabuf->lock) around the exporter's attach and the attachment list;
 * then, when exactly one side is dynamic, the reservation lock around the mapping the core makes and caches now
 * (a dynamic exporter pinned) — mainline's dma_buf_dynamic_attach. Call it without either lock held. A failure
 * of that mapping detaches again (after the unlock) and is thrown.
 */
export function dmaBufDynamicAttach(buf: DmaBuf, dev: Device, importerOps: DmaBufAttachOps | null, importerPriv: unknown = null): DmaBufAttachment {
  if (!(buf instanceof DmaBuf) || !dev || typeof dev.name !== 'string') {
    warn('dma_buf_dynamic_attach: WARN_ON(!dmabuf || !dev)');
    throw new KernelError(E.EINVAL);
  }
  if (importerOps && typeof importerOps.moveNotify !== 'function') {
    warn('dma_buf_dynamic_attach: WARN_ON(importer_ops && !move_notify)');
    throw new KernelError(E.EINVAL);
  }
  const p2p = importerOps?.allowPeer2peer ? 1 : 0;
  let r;
  buf.lock?.lock();
  try {
    r = drt().call(DOWN.attach, [buf.ino, importerOps ? 1 : 0, p2p], enc.encode(dev.name));
  } finally {
    buf.lock?.unlock();
  }
  const att = new DmaBufAttachment(r.ret, buf, { name: dev.name }, importerOps, importerPriv, importerOps !== null, p2p === 1);
  importerAtts.set(att.id, att);
  if (r.res[1] === 1) {
    let failed: unknown = null;
    resvLock(buf);
    try {
      drt().call(DOWN.attach_map, [att.id]);
      att.coreCached = true;
    } catch (e) {
      failed = e;
    } finally {
      dmaResvUnlock(buf.resv);
    }
    if (failed) {
      dmaBufDetach(buf, att);
      throw failed;
    }
  }
  return att;
}

/**
 * dma_buf_detach: the reservation lock (taken here) around the unmap of the table the core cached (and the unpin
 * of a dynamic exporter), then the buffer's lock around leaving the list and the exporter's detach. Detaching
 * twice is a use after free in C: here a WARN and nothing else.
 */
export function dmaBufDetach(buf: DmaBuf, att: DmaBufAttachment): void {
  if (!(buf instanceof DmaBuf) || !(att instanceof DmaBufAttachment)) {
    warn('dma_buf_detach: WARN_ON(!dmabuf || !attach)');
    return;
  }
  if (att.dmabuf !== buf) {
    warn('dma_buf_detach: WARN_ON(dmabuf != attach->dmabuf)');
    return;
  }
  if (importerAtts.get(att.id) !== att) {
    warn(`dma_buf_detach: attachment ${att.id} is detached already (use after free)`);
    return;
  }
  if (att.coreCached) {
    resvLock(buf);
    try {
      drt().call(DOWN.detach_unmap, [att.id]);
    } finally {
      dmaResvUnlock(buf.resv);
    }
    att.coreCached = false;
  }
  buf.lock?.lock();
  try {
    drt().call(DOWN.detach, [att.id]);
  } finally {
    buf.lock?.unlock();
    importerAtts.delete(att.id);
    for (const [id, sgt] of sgts) if (sgt.attId === att.id) sgts.delete(id);
  }
}

/**
 * dma_buf_map_attachment: the buffer's pages mapped for the attachment's device. The caller holds the buffer's
 * reservation lock (dma_resv_assert_held: a WARN otherwise) — the exporter's map (and a dynamic exporter's pin)
 * then runs under it, in the exporter's worker; dmaBufMapAttachmentUnlocked takes it. A cached table
 * (cache_sgt_mapping, or the one made at attach) comes back without the exporter; another direction is EBUSY
 * unless the cached one is bidirectional. The regions' memory arrives in this worker with the table.
 */
export function dmaBufMapAttachment(att: DmaBufAttachment, dir: DmaDataDirection): SgTable {
  const a = liveAtt(att, 'dma_buf_map_attachment');
  assertResvHeld(a.dmabuf, 'dma_buf_map_attachment');
  const d = checkDir(dir);
  const r = drt().call(DOWN.map, [a.id, d]);
  const id = r.ret;
  if (r.res[1] === 1) a.coreCached = true;
  let sgt = sgts.get(id);
  if (!sgt) {
    const ents = JSON.parse(dec.decode(r.data)) as [number, number, number, number][];
    sgt = new SgTable(
      id,
      ents.map(([region, offset, length, dmaAddress]) => ({ region: regionOf(region), offset, length, dmaAddress })),
      a.id,
    );
    sgts.set(id, sgt);
  }
  return sgt;
}

/** dma_buf_map_attachment_unlocked: dmaBufMapAttachment with the reservation lock taken (and dropped) here. */
export function dmaBufMapAttachmentUnlocked(att: DmaBufAttachment, dir: DmaDataDirection): SgTable {
  const a = checkAtt(att, 'dma_buf_map_attachment_unlocked');
  resvLock(a.dmabuf);
  try {
    return dmaBufMapAttachment(a, dir);
  } finally {
    dmaResvUnlock(a.dmabuf.resv);
  }
}

/**
 * dma_buf_unmap_attachment: undoes a map (a no-op for the cached table). The caller holds the reservation lock
 * (a WARN otherwise); dmaBufUnmapAttachmentUnlocked takes it. A table this attachment never got is a WARN and
 * nothing else (C would hand the exporter a stale pointer).
 */
export function dmaBufUnmapAttachment(att: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void {
  if (!(att instanceof DmaBufAttachment) || !(sgt instanceof SgTable)) {
    warn('dma_buf_unmap_attachment: WARN_ON(!attach || !attach->dmabuf || !sg_table)');
    return;
  }
  const a = liveAtt(att, 'dma_buf_unmap_attachment');
  assertResvHeld(a.dmabuf, 'dma_buf_unmap_attachment');
  const r = drt().call(DOWN.unmap, [a.id, sgt.id, checkDir(dir)]);
  if (r.ret === 1) sgts.delete(sgt.id);
}

/** dma_buf_unmap_attachment_unlocked: dmaBufUnmapAttachment with the reservation lock taken here. */
export function dmaBufUnmapAttachmentUnlocked(att: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void {
  if (!(att instanceof DmaBufAttachment) || !(sgt instanceof SgTable)) {
    warn('dma_buf_unmap_attachment_unlocked: WARN_ON(!attach || !attach->dmabuf || !sg_table)');
    return;
  }
  resvLock(att.dmabuf);
  try {
    dmaBufUnmapAttachment(att, sgt, dir);
  } finally {
    dmaResvUnlock(att.dmabuf.resv);
  }
}

/** dma_buf_pin: a dynamic importer keeps the buffer where it is. The caller holds the reservation lock. */
export function dmaBufPin(att: DmaBufAttachment): void {
  const a = liveAtt(att, 'dma_buf_pin');
  assertResvHeld(a.dmabuf, 'dma_buf_pin');
  drt().call(DOWN.pin, [a.id]);
}

/** dma_buf_unpin: undoes dmaBufPin. The caller holds the reservation lock. */
export function dmaBufUnpin(att: DmaBufAttachment): void {
  const a = liveAtt(att, 'dma_buf_unpin');
  assertResvHeld(a.dmabuf, 'dma_buf_unpin');
  drt().call(DOWN.unpin, [a.id]);
}

/**
 * dma_buf_move_notify: the exporter is about to move the buffer — every dynamic importer's moveNotify runs (in its
 * worker, under this caller's reservation lock, which the caller must hold: a WARN otherwise). EBUSY while an
 * attachment has it pinned (a static importer's mapping pins it): it cannot move then.
 */
export function dmaBufMoveNotify(buf: DmaBuf): void {
  const b = checkBuf(buf, 'dma_buf_move_notify');
  assertResvHeld(b, 'dma_buf_move_notify');
  drt().call(DOWN.move_notify, [b.ino]);
}

/** dma_buf_begin_cpu_access from kernel code: the exporter's hook, then the implicit fences of the direction. */
export function dmaBufBeginCpuAccess(buf: DmaBuf, dir: DmaDataDirection): void {
  const b = checkBuf(buf, 'dma_buf_begin_cpu_access');
  mightLockResv(b, 'dma_buf_begin_cpu_access');
  drt().call(DOWN.begin_cpu_access, [b.ino, checkDir(dir)]);
}

/** dma_buf_end_cpu_access: the exporter's end_cpu_access. Call it without the reservation lock held. */
export function dmaBufEndCpuAccess(buf: DmaBuf, dir: DmaDataDirection): void {
  const b = checkBuf(buf, 'dma_buf_end_cpu_access');
  mightLockResv(b, 'dma_buf_end_cpu_access');
  drt().call(DOWN.end_cpu_access, [b.ino, checkDir(dir)]);
}

/**
 * might_lock(&dmabuf->resv->lock.base): the exporter's CPU-access hooks may take the reservation lock, so the
 * caller must not hold it (mainline's convention; lockdep reports the recursion). A WARN when this worker does.
 */
function mightLockResv(buf: DmaBuf, what: string): void {
  if (dmaResvHeld(buf.resv)) warn(`${what}: might_lock(&dmabuf->resv->lock.base) while this worker holds it (recursive locking)`);
}

/**
 * dma_buf_vmap: a kernel mapping of the whole buffer. The core counts them: the first vmap calls the exporter,
 * the others get the same mapping — concurrent vmaps from several workers are serialized by the buffer's lock,
 * taken here in this worker. I/O memory comes back as accessors only (map.vaddrIomem), never as bytes.
 */
export function dmaBufVmap(buf: DmaBuf): IosysMap {
  checkBuf(buf, 'dma_buf_vmap');
  buf.lock?.lock();
  try {
    const r = drt().call(DOWN.vmap, [buf.ino]);
    const [regionId, offset, length, iomem, gen] = [r.res[0]!, r.res[1]!, r.res[2]!, r.res[3]!, r.res[4]!];
    if (buf.vmapGen !== gen || buf.vmapPtr.isNull) {
      const bytes = new Uint8Array(regionOf(regionId).sab, offset, length);
      buf.vmapPtr = iomem ? IosysMap.fromIomem(new IoMem(bytes)) : IosysMap.fromVaddr(bytes);
      buf.vmapGen = gen;
    }
    return buf.vmapPtr;
  } finally {
    buf.lock?.unlock();
  }
}

/** dma_buf_vunmap: drops one vmap (the last reaches the exporter). A map the core did not hand out is a BUG. */
export function dmaBufVunmap(buf: DmaBuf, map: IosysMap): void {
  checkBuf(buf, 'dma_buf_vunmap');
  buf.lock?.lock();
  try {
    const gen = map instanceof IosysMap && !map.isNull && map.isEqual(buf.vmapPtr) ? buf.vmapGen : -1;
    const r = drt().call(DOWN.vunmap, [buf.ino, gen]);
    if (r.ret === 0) buf.vmapPtr = IosysMap.NULL;
  } finally {
    buf.lock?.unlock();
  }
}

// ---- warnings and oopses go to the kernel's record ----------------------------------------------------------

/**
 * Points this worker's WARN() sink (src/bug.ts) and its oops reporter at the kernel: each warning or BUG of the
 * driver is a `report` downcall, recorded in the kernel's warnings / oopses with the calling process's context,
 * where expectKernelWarnings can expect it and shutdown() counts it. A warning the driver's own expectWarnings()
 * matched arrives marked expected. When the kernel is unreachable (cut off, shut down) it is printed here instead.
 * workers/driver.ts calls it before probe().
 */
export function routeReportsToKernel(): void {
  const rt = drt();
  const send = (kind: 0 | 1, text: string, expected: boolean): void => {
    try {
      rt.call(DOWN.report, [kind, expected ? 1 : 0], enc.encode(text.slice(0, 16_000)));
    } catch {
      if (!expected) printLine(`dmabuf-sim: driver ${rt.name}: ${kind === 1 ? '' : 'WARNING: '}${text}`);
    }
  };
  setWarningSink((message, expected) => send(0, message, expected), false);
  rt.onBug = (text) => send(1, text, false);
}

// ---- the upcall server ----------------------------------------------------------------------------------------------

function fileOf(id: number): { file: DriverFile; dev: Chrdev } {
  const f = files.get(id);
  if (!f) BUG(`driver ${drt().name}: upcall for unknown file ${id}`);
  return f;
}

function exported(ino: number): DmaBuf {
  const b = bufs.get(ino);
  if (!b || !b.ops) BUG(`driver ${drt().name}: exporter op for dma-buf ino ${ino} it did not export`);
  return b;
}

function exporterAtt(buf: DmaBuf, f: FrameViews): DmaBufAttachment {
  const id = f.args[1]!;
  let att = exporterAtts.get(id);
  if (!att) {
    // The exporter's view of an attachment it is told of for the first time (exp_attach creates it).
    att = new DmaBufAttachment(id, buf, { name: '?' }, null, null, false, false);
  }
  return att;
}

function wouldBlock(f: FrameViews, wb: WouldBlock): void {
  f.res[0] = wb.queue.id;
  f.i32[F_RFLAGS] = RF_WOULD_BLOCK;
}

/** Serves one upcall (runtime.ts calls it with the frame; the reply goes into the same frame). */
export function serveUpcall(op: number, f: FrameViews): void {
  const a = f.args;
  const ctx: CallContext = { pid: f.i32[F_PID]! };
  switch (op) {
    case UP.nop:
      f.res[0] = 0;
      return;
    case UP.open: {
      const path = dec.decode(f.bytes(F_IN_LEN));
      const dev = chrdevs.get(path);
      if (!dev) throw new KernelError(E.ENODEV);
      const file: DriverFile = { id: a[0]!, path, flags: a[1]!, privateData: null };
      dev.fops.open?.(file, ctx);
      files.set(file.id, { file, dev });
      return;
    }
    case UP.release: {
      const e = files.get(a[0]!);
      if (!e) return;
      files.delete(a[0]!);
      e.dev.fops.release?.(e.file);
      return;
    }
    case UP.ioctl: {
      const { file, dev } = fileOf(a[0]!);
      if (!dev.fops.ioctl) throw new KernelError(E.ENOTTY);
      const bytes = a[2] ? f.bytes(F_IN_LEN).slice() : null;
      let r: number | WouldBlock;
      try {
        r = dev.fops.ioctl(file, a[1]! >>> 0, { bytes, value: a[3]! }, ctx);
      } catch (e) {
        // The struct goes back to the caller on failure too: drm_ioctl copies kdata out before returning the error.
        if (bytes) f.put(F_OUT_LEN, bytes);
        throw e;
      }
      if (r instanceof WouldBlock) return wouldBlock(f, r);
      f.res[0] = r;
      if (bytes) f.put(F_OUT_LEN, bytes);
      return;
    }
    case UP.mmap: {
      const { file, dev } = fileOf(a[0]!);
      if (!dev.fops.mmap) throw new KernelError(E.ENODEV);
      const m = dev.fops.mmap(file, { pgoff: a[1]!, length: a[2]!, prot: a[3]!, flags: a[4]! }, ctx);
      f.res[0] = m.region.id;
      f.res[1] = m.offset;
      return;
    }
    case UP.poll: {
      const { file, dev } = fileOf(a[0]!);
      const queues: number[] = [];
      f.res[0] = dev.fops.poll ? dev.fops.poll(file, { wait: (q) => void queues.push(q.id), key: a[1]! }) : 0x145;
      putJson(f, F_OUT_LEN, queues);
      return;
    }
    case UP.read: {
      const { file, dev } = fileOf(a[0]!);
      if (!dev.fops.read) throw new KernelError(E.EINVAL);
      const r = dev.fops.read(file, a[1]!, ctx);
      if (r instanceof WouldBlock) return wouldBlock(f, r);
      const n = Math.min(r.length, a[1]!);
      f.put(F_OUT_LEN, r.subarray(0, n));
      f.res[0] = n;
      return;
    }
    case UP.exp_attach: {
      const buf = exported(a[0]!);
      const att = new DmaBufAttachment(a[1]!, buf, { name: dec.decode(f.bytes(F_IN_LEN)) }, null, null, a[2] === 1, a[3] === 1);
      buf.ops!.attach?.(buf, att);
      exporterAtts.set(att.id, att);
      return;
    }
    case UP.exp_detach: {
      const buf = exported(a[0]!);
      const att = exporterAtt(buf, f);
      exporterAtts.delete(att.id);
      buf.ops!.detach?.(buf, att);
      return;
    }
    case UP.exp_map: {
      const buf = exported(a[0]!);
      const ranges = underCallersResv(buf, () => buf.ops!.mapDmaBuf(exporterAtt(buf, f), a[2]! as DmaDataDirection));
      const key = nextExporterSgt++;
      exporterSgts.set(key, ranges);
      f.res[0] = key;
      putJson(
        f,
        F_OUT_LEN,
        ranges.map((s) => [s.region.id, s.offset, s.length]),
      );
      return;
    }
    case UP.exp_unmap: {
      const buf = exported(a[0]!);
      const ranges = exporterSgts.get(a[2]!) ?? [];
      exporterSgts.delete(a[2]!);
      underCallersResv(buf, () => buf.ops!.unmapDmaBuf(exporterAtt(buf, f), ranges, a[3]! as DmaDataDirection));
      return;
    }
    case UP.exp_release: {
      const buf = exported(a[0]!);
      bufs.delete(buf.ino);
      buf.ops!.release(buf);
      return;
    }
    case UP.exp_begin_cpu_access: {
      const buf = exported(a[0]!);
      buf.ops!.beginCpuAccess?.(buf, a[1]! as DmaDataDirection);
      return;
    }
    case UP.exp_end_cpu_access: {
      const buf = exported(a[0]!);
      buf.ops!.endCpuAccess?.(buf, a[1]! as DmaDataDirection);
      return;
    }
    case UP.exp_mmap: {
      const buf = exported(a[0]!);
      if (!buf.ops!.mmap) throw new KernelError(E.EINVAL);
      const m = buf.ops!.mmap(buf, { pgoff: a[1]!, length: a[2]!, prot: a[3]!, flags: a[4]! });
      f.res[0] = m.region.id;
      f.res[1] = m.offset;
      return;
    }
    case UP.exp_vmap: {
      const buf = exported(a[0]!);
      if (!buf.ops!.vmap) throw new KernelError(E.EINVAL);
      const v = buf.ops!.vmap(buf);
      f.res[0] = v.region.id;
      f.res[1] = v.offset ?? 0;
      f.res[2] = v.length ?? v.region.size - (v.offset ?? 0);
      f.res[3] = v.iomem ? 1 : 0;
      return;
    }
    case UP.exp_vunmap: {
      const buf = exported(a[0]!);
      buf.ops!.vunmap?.(buf);
      return;
    }
    case UP.exp_pin: {
      const buf = exported(a[0]!);
      underCallersResv(buf, () => buf.ops!.pin?.(exporterAtt(buf, f)));
      return;
    }
    case UP.exp_unpin: {
      const buf = exported(a[0]!);
      underCallersResv(buf, () => buf.ops!.unpin?.(exporterAtt(buf, f)));
      return;
    }
    case UP.imp_move_notify: {
      const att = importerAtts.get(a[0]!);
      if (!att?.importerOps) return;
      // Runs under the exporter's reservation lock (held in the exporter's worker, on whose behalf this runs).
      underCallersResv(att.dmabuf, () => att.importerOps!.moveNotify(att));
      return;
    }
    default:
      throw new KernelError(E.ENOSYS, `upcall ${op}`);
  }
}

/** getJson re-exported for the worker entry's probe report. */
export { getJson };
