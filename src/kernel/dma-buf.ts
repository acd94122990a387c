/**
 * The dma-buf core (drivers/dma-buf/dma-buf.c): struct dma_buf, its anonymous file, the exporter/importer kernel
 * API (export, fd, get/put, attach/detach, map/unmap, CPU access, vmap) and the debugfs `dma_buf/bufinfo` view.
 *
 * Locking: everything here runs on the broker thread, one syscall or control call at a time, so db_list.lock,
 * dmabuf->lock and name_lock of the C code are implicit. The reservation object (`buf.resv`, dma-resv.ts) has a
 * real lock word; it is taken where the C code takes it (poll, sync_file import, bufinfo) and never held across an
 * await or a parked syscall. Buffer pages are ShmRegions (SharedArrayBuffers) that processes touch directly
 * through their mappings; nothing here reads them.
 *
 * Lifetimes: a dma_buf lives exactly as long as its file. Every reference is a file reference (kernel.fget/fput):
 * fds, mappings, dma_buf_get() holders, and pending poll callbacks (one per direction, taken when armed, put when
 * the fence callback fires). The last fput leaves the global list and runs the exporter's release; the buffer's
 * own reservation object is finalised then, putting every fence it still holds. Attachments take no file
 * reference.
 *
 * Implicit synchronisation (the fences on `buf.resv`): poll() and DMA_BUF_IOCTL_SYNC START wait for them without
 * ever blocking the broker — poll through fence callbacks that wake `buf.poll`, SYNC by parking the syscall
 * (fence-wait.ts explains the three ways kernel code in the broker may wait). EXPORT/IMPORT_SYNC_FILE move them
 * to and from sync_file fds.
 *
 * The seam for exporters that live in other workers: an exporter is nothing but a DmaBufOps object. The core
 * calls it synchronously on the broker thread; a driver living in another worker will plug in through an adapter
 * implementing DmaBufOps (forwarding each op over its own channel and waiting for the answer), without changes
 * here. `owner` names the exporting driver for diagnostics, as THIS_MODULE does.
 */
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE, type DmaDataDirection } from './dma-direction.js';
import { ModuleState } from './module-state.js';
import { BUG, warn } from '../bug.js';
import { KernelError } from '../errors.js';
import {
  DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
  DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
  DMA_BUF_IOCTL_SYNC,
  DMA_BUF_NAME_LEN,
  DMA_BUF_SET_NAME_A,
  DMA_BUF_SET_NAME_B,
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_VALID_FLAGS_MASK,
  DMA_BUF_SYNC_WRITE,
  dma_buf_export_sync_file,
  dma_buf_import_sync_file,
} from '../uapi/dma-buf.js';
import { E } from '../uapi/errno.js';
import { O_ACCMODE, O_CLOEXEC, O_NONBLOCK, PAGE_SHIFT, PAGE_SIZE, POLLERR, POLLIN, POLLOUT, SEEK_END, SEEK_SET } from '../uapi/posix.js';
import {
  DmaFenceCb,
  type DmaFence,
  dmaFenceAddCallback,
  dmaFenceGet,
  dmaFenceGetStub,
  dmaFenceIsSignaled,
  dmaFencePut,
  MAX_SCHEDULE_TIMEOUT,
} from '../fence/dma-fence.js';
import { dmaFenceUnwrapForEach } from '../fence/dma-fence-unwrap.js';
import {
  DMA_RESV_USAGE_KERNEL,
  DMA_RESV_USAGE_NAMES,
  DMA_RESV_USAGE_READ,
  DMA_RESV_USAGE_WRITE,
  DmaResv,
  DmaResvIter,
  type DmaResvUsage,
  dmaResvAddFence,
  dmaResvDescribe,
  dmaResvEntries,
  dmaResvFini,
  dmaResvForEachFence,
  dmaResvGetSingleton,
  dmaResvInit,
  dmaResvDescribeUnlocked,
  dmaResvForEachFenceUnlocked,
  dmaResvIterBegin,
  dmaResvIterEnd,
  dmaResvLockNoWait,
  dmaResvReserveFences,
  dmaResvTestSignaled,
  dmaResvUnlock,
  dmaResvUsageRw,
  dmaResvWaitAsync,
} from '../fence/dma-resv.js';
import { dmaResvLockSyscall, dmaResvWaitSyscall } from './fence-wait.js';
import { allocOrEnomem, syncFileGetFence, syncFileInstall } from './sync-file.js';
import { FMODE_LSEEK, fmodeFromFlags, pollRequestedEvents, type File, type FileOperations, type PollTable } from './file.js';
import type { Kernel } from './kernel.js';
import type { ShmRegion, Vma } from './mm.js';
import type { Task } from './task.js';
import type { UserPtr } from './uaccess.js';
import { blockOnPromise, WaitQueue, type SyscallOutcome } from './wait.js';
import { IosysMap } from '../shm/iosys-map.js';


/** FMODE_OPENED (include/linux/fs.h): set by alloc_file on every opened file; bufinfo prints the raw f_mode. */
export const FMODE_OPENED = 0x80000;

/** CONFIG_DMABUF_MOVE_NOTIFY: off, as in defconfigs — dynamic exporters get pinned for static-style mappings. */
const CONFIG_DMABUF_MOVE_NOTIFY = false;

// ---- struct device, scatterlists, iosys_map ----------------------------------------------------------------

/** struct device as far as dma-buf cares: its dev_name() (bufinfo lists attached devices by it). */
export interface Device {
  readonly name: string;
}

/** One scatterlist entry: a page-aligned range of a ShmRegion. */
export interface Scatterlist {
  readonly region: ShmRegion;
  /** Byte offset into the region (a multiple of PAGE_SIZE). */
  readonly offset: number;
  /** Bytes (a multiple of PAGE_SIZE). */
  readonly length: number;
}

/** struct sg_table: the page ranges backing a buffer, as an importer sees them after map_dma_buf. */
export class SgTable {
  constructor(readonly sgl: readonly Scatterlist[]) {}

  get nents(): number {
    return this.sgl.length;
  }

  /** Total bytes described. */
  get length(): number {
    let n = 0;
    for (const s of this.sgl) n += s.length;
    return n;
  }

  /** dup_sg_table: a new table (a new object) listing the same pages. */
  dup(): SgTable {
    return new SgTable(this.sgl.map((s) => ({ region: s.region, offset: s.offset, length: s.length })));
  }
}

export { IoMem, IosysMap } from '../shm/iosys-map.js';

// ---- exporter and importer interfaces ------------------------------------------------------------------------

/**
 * struct dma_buf_ops: what an exporter implements. Errors are thrown KernelErrors (where C returns -errno or an
 * ERR_PTR). Required: mapDmaBuf, unmapDmaBuf, release. pin and unpin come together or not at all; an exporter
 * with pin/unpin is "dynamic" and may not ask for cacheSgtMapping.
 */
export interface DmaBufOps<P = unknown> {
  /** cache_sgt_mapping: the core keeps the first mapping of each attachment and hands it out again. */
  readonly cacheSgtMapping?: boolean;
  /** May refuse the device (its error is returned by dma_buf_attach). */
  attach?(buf: DmaBuf<P>, att: DmaBufAttachment<P>): void;
  detach?(buf: DmaBuf<P>, att: DmaBufAttachment<P>): void;
  pin?(att: DmaBufAttachment<P>): void;
  unpin?(att: DmaBufAttachment<P>): void;
  mapDmaBuf(att: DmaBufAttachment<P>, dir: DmaDataDirection): SgTable;
  unmapDmaBuf(att: DmaBufAttachment<P>, sgt: SgTable, dir: DmaDataDirection): void;
  /** Last reference gone: free the backing storage. */
  release(buf: DmaBuf<P>): void;
  beginCpuAccess?(buf: DmaBuf<P>, dir: DmaDataDirection): void;
  endCpuAccess?(buf: DmaBuf<P>, dir: DmaDataDirection): void;
  /** Sets vma.region / vma.regionOffset (remap_pfn_range); refuses what it cannot map. */
  mmap?(buf: DmaBuf<P>, vma: Vma): void;
  vmap?(buf: DmaBuf<P>): IosysMap;
  vunmap?(buf: DmaBuf<P>, map: IosysMap): void;
}

/** struct dma_buf_attach_ops: a dynamic importer's callbacks. */
export interface DmaBufAttachOps<P = unknown> {
  readonly allowPeer2peer?: boolean;
  /** The exporter is about to move the buffer: the importer must drop its mappings. */
  moveNotify(att: DmaBufAttachment<P>): void;
}

/**
 * An exporter that lives in another worker (a driver, src/kernel/driver-host.ts): each op is an upcall into the
 * exporter's worker, answered asynchronously — the broker never waits for it. The async core API below
 * (dmaBufDynamicAttachAsync, dmaBufMapAttachmentAsync, dmaBufVmapAsync...) awaits these; the synchronous API
 * cannot reach such an exporter and fails with EAGAIN (release is sent without waiting).
 */
export interface RemoteDmaBufOps {
  /** Which optional ops the exporter implements (pin/unpin, attach, ...: as the bits of its export). */
  readonly has: { readonly attach: boolean; readonly detach: boolean; readonly pin: boolean; readonly unpin: boolean; readonly beginCpuAccess: boolean; readonly endCpuAccess: boolean; readonly mmap: boolean; readonly vmap: boolean; readonly vunmap: boolean };
  attach(buf: DmaBuf, att: DmaBufAttachment): Promise<void>;
  detach(buf: DmaBuf, att: DmaBufAttachment): Promise<void>;
  pin(att: DmaBufAttachment): Promise<void>;
  unpin(att: DmaBufAttachment): Promise<void>;
  mapDmaBuf(att: DmaBufAttachment, dir: DmaDataDirection): Promise<SgTable>;
  unmapDmaBuf(att: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): Promise<void>;
  /** Sent without waiting: the broker-side state is freed now whatever the exporter answers. */
  release(buf: DmaBuf): void;
  beginCpuAccess(buf: DmaBuf, dir: DmaDataDirection): Promise<void>;
  endCpuAccess(buf: DmaBuf, dir: DmaDataDirection): Promise<void>;
  mmap(buf: DmaBuf, vma: Vma): Promise<void>;
  vmap(buf: DmaBuf): Promise<IosysMap>;
  vunmap(buf: DmaBuf, map: IosysMap): Promise<void>;
}

/** What a synchronous core path does with a remote exporter's op: it cannot wait, so EAGAIN naming the async API. */
function remoteFacade(remote: RemoteDmaBufOps, cacheSgtMapping: boolean, has: { map: boolean; unmap: boolean; release: boolean }): DmaBufOps {
  const no = (what: string) => (): never => {
    throw new KernelError(E.EAGAIN, `${what}: the exporter lives in a driver worker; use the async API`);
  };
  const h = remote.has;
  return {
    cacheSgtMapping,
    ...(h.attach ? { attach: no('attach') } : {}),
    ...(h.detach ? { detach: no('detach') } : {}),
    ...(h.pin ? { pin: no('pin') } : {}),
    ...(h.unpin ? { unpin: no('unpin') } : {}),
    ...(has.map ? { mapDmaBuf: no('map_dma_buf') } : {}),
    ...(has.unmap ? { unmapDmaBuf: no('unmap_dma_buf') } : {}),
    ...(has.release ? { release: (buf: DmaBuf) => remote.release(buf) } : {}),
    ...(h.beginCpuAccess ? { beginCpuAccess: no('begin_cpu_access') } : {}),
    ...(h.endCpuAccess ? { endCpuAccess: no('end_cpu_access') } : {}),
    ...(h.mmap ? { mmap: no('mmap') } : {}),
    ...(h.vmap ? { vmap: no('vmap') } : {}),
    ...(h.vunmap ? { vunmap: no('vunmap') } : {}),
  } as DmaBufOps;
}

/** struct dma_buf_export_info (DEFINE_DMA_BUF_EXPORT_INFO). */
export interface DmaBufExportInfo<P> {
  readonly ops: DmaBufOps<P>;
  /** Bytes (the heaps pass a page-aligned size). */
  readonly size: number;
  /** File flags: only O_ACCMODE and O_NONBLOCK reach f_flags; the access mode decides the file mode. */
  readonly flags: number;
  readonly priv: P;
  /** exp_name: the exporter's name, shown in bufinfo and fdinfo. */
  readonly expName: string;
  /** The exporting driver (THIS_MODULE), for diagnostics. */
  readonly owner?: string;
  /**
   * exp_info->resv: the exporter's own reservation object (shared with its native buffer object, or with other
   * buffers). The dma-buf uses it and never finalises it. Absent: the buffer gets its own, finalised at release.
   */
  readonly resv?: DmaResv;
  /**
   * A driver worker's exporter (instead of local ops): `ops` is then only the shape of what it implements, for
   * the export checks; every op goes to `remote`.
   */
  readonly remote?: { readonly ops: RemoteDmaBufOps; readonly cacheSgtMapping: boolean; readonly map: boolean; readonly unmap: boolean; readonly release: boolean };
}

/** START/END calls of DMA_BUF_IOCTL_SYNC in one direction. */
export interface CpuAccessCount {
  start: number;
  end: number;
}

/** struct dma_buf_attachment. */
export class DmaBufAttachment<P = unknown> {
  /** Mapping cached by the core (cache_sgt_mapping, or static/dynamic mismatch at attach), and its direction. */
  sgt: SgTable | null = null;
  dir: DmaDataDirection = DMA_NONE;
  /** The exporter's per-attachment data (set by ops.attach). */
  priv: unknown = null;
  readonly peer2peer: boolean;
  trackId = 0;
  constructor(
    readonly dmabuf: DmaBuf<P>,
    readonly dev: Device,
    readonly importerOps: DmaBufAttachOps<P> | null,
    readonly importerPriv: unknown,
  ) {
    this.peer2peer = importerOps?.allowPeer2peer ?? false;
  }
}

/**
 * struct dma_buf_poll_cb_t: one poll direction's callback slot (cb_in, cb_out). While `active` is set a fence
 * callback is pending on the first unsignaled fence of that direction and holds one reference to the buffer's
 * file; it fires in the broker, clears `active`, wakes `dmabuf->poll` and puts the fence and the file.
 */
export class DmaBufPollCb {
  readonly cb = new DmaFenceCb();
  /** EPOLLIN or EPOLLOUT while armed, 0 when idle. */
  active = 0;
}

/** struct dma_buf. Create with dmaBufExport(); it lives as long as `file`. */
export class DmaBuf<P = unknown> {
  /** The anonymous file on the dmabuf pseudo filesystem; set by dmaBufExport before anyone sees the buffer. */
  file!: File<DmaBuf<P>>;
  /** DMA_BUF_SET_NAME's name; null until set ("" is a name, distinct from none). */
  name: string | null = null;
  /** Newest first (list_add), as bufinfo prints them. */
  readonly attachments: DmaBufAttachment<P>[] = [];
  vmappingCounter = 0;
  vmapPtr: IosysMap = IosysMap.NULL;
  /** The wait queue poll() sleeps on (dmabuf->poll), woken by the poll callbacks when their fence signals. */
  readonly poll = new WaitQueue();
  /** cb_in (EPOLLIN: usage ≤ WRITE fences) and cb_out (EPOLLOUT: usage ≤ READ fences). */
  readonly cbIn = new DmaBufPollCb();
  readonly cbOut = new DmaBufPollCb();
  /**
   * DMA_BUF_IOCTL_SYNC START/END calls per enum dma_data_direction (index 0 BIDIRECTIONAL, 1 TO_DEVICE = write,
   * 2 FROM_DEVICE = read). The core never fails on an unpaired END; these counts are for the ownership checker.
   */
  readonly cpuSync: readonly [CpuAccessCount, CpuAccessCount, CpuAccessCount] = [
    { start: 0, end: 0 },
    { start: 0, end: 0 },
    { start: 0, end: 0 },
  ];
  /** dmabuf->resv: the implicit fences. Set by dmaBufExport before anyone sees the buffer. */
  resv!: DmaResv;
  /** The resv is the buffer's own (embedded in the C struct): finalised at release. False for exp_info->resv. */
  resvOwned = false;
  trackId = 0;
  /** The exporter's worker, when a driver exported it (every op is an upcall); null for in-broker exporters. */
  remote: RemoteDmaBufOps | null = null;
  /** A vmap the exporter is still answering (the async path): later vmaps wait for it instead of calling again. */
  vmapPending: Promise<IosysMap> | null = null;
  /** Pins (pin ops) outstanding: a pinned buffer must not move (dma_buf_move_notify refuses with EBUSY). */
  pins = 0;

  constructor(
    readonly k: Kernel,
    readonly ops: DmaBufOps<P>,
    readonly size: number,
    readonly expName: string,
    public priv: P,
    /** The dma-buf private inode number (dmabuf_inode counter, from 1). */
    readonly ino: number,
    readonly owner: string,
  ) {}
}

/** The dma-buf subsystem's global state (db_list and the inode counter). */
interface DmaBufSubsystem {
  /** db_list: every live buffer, newest first. */
  readonly list: DmaBuf[];
  nextIno: number;
}

const dmaBufState = new ModuleState<DmaBufSubsystem>('dma-buf');

function subsys(k: Kernel): DmaBufSubsystem {
  return dmaBufState.of(k);
}

/** Every live dma-buf, newest first (for debugfs views and the control plane). */
export function dmaBufList(k: Kernel): readonly DmaBuf[] {
  return subsys(k).list;
}

const isDynamic = (buf: DmaBuf): boolean => buf.ops.pin !== undefined;
const attachmentIsDynamic = (att: DmaBufAttachment): boolean => att.importerOps !== null;

// ---- waiting for implicit fences in the broker --------------------------------------------------------------------

/**
 * The atomic-context rule (fence-wait.ts): a synchronous kernel API that would have to sleep on unsignaled fences
 * of usage ≤ `usage` fails with EAGAIN instead, naming the API that can wait. Returns when nothing is pending.
 */
function mustNotSleep(buf: DmaBuf, usage: DmaResvUsage, what: string, instead: string): void {
  if (dmaResvTestSignaled(buf.resv, usage)) return;
  throw new KernelError(
    E.EAGAIN,
    `${what}: dma-buf ino ${buf.ino} has unsignaled fences of usage <= ${DMA_RESV_USAGE_NAMES[usage]} and the ` +
      `broker cannot sleep here; use ${instead}`,
  );
}

// ---- export, fd, get, put ------------------------------------------------------------------------------------

/**
 * dma_buf_export - wraps an exporter's buffer in a dma_buf and its anonymous file.
 *
 * Checks the ops as Linux does (each failure is a WARN_ON and EINVAL): priv, mapDmaBuf, unmapDmaBuf and release
 * present; cacheSgtMapping not combined with pin/unpin; pin and unpin both or neither. The inode number comes
 * from the dma-buf private counter (1, 2, ...). The buffer gets its own reservation object unless the exporter
 * passes `resv`. The buffer joins the global list (newest first) and the tracker.
 *
 * Returns a buffer holding exactly one file reference, which the caller must hand to dmaBufFd() or drop with
 * dmaBufPut().
 */
export function dmaBufExport<P>(k: Kernel, info: DmaBufExportInfo<P>): DmaBuf<P> {
  const r = info.remote;
  const ops = (r ? remoteFacade(r.ops, r.cacheSgtMapping, r) : info.ops) as DmaBufOps<P> | undefined;
  if (info.priv === null || info.priv === undefined || !ops || !ops.mapDmaBuf || !ops.unmapDmaBuf || !ops.release) {
    warn('dma_buf_export: WARN_ON(!priv || !ops || !map_dma_buf || !unmap_dma_buf || !release)');
    throw new KernelError(E.EINVAL, 'dma_buf_export: incomplete ops');
  }
  if (ops.cacheSgtMapping && (ops.pin || ops.unpin)) {
    warn('dma_buf_export: WARN_ON(cache_sgt_mapping && (pin || unpin))');
    throw new KernelError(E.EINVAL, 'dma_buf_export: cache_sgt_mapping with pin/unpin');
  }
  if (!ops.pin !== !ops.unpin) {
    warn('dma_buf_export: WARN_ON(!pin != !unpin)');
    throw new KernelError(E.EINVAL, 'dma_buf_export: pin without unpin');
  }
  const st = subsys(k);
  const ino = st.nextIno;
  // The exporter's resv, or one of the buffer's own (dma_resv_init of the object allocated after struct dma_buf):
  // an object of the machine's reservation table, so drivers reach it by id. A full table is ENOMEM.
  const o = k.origin();
  const resv = info.resv ?? allocOrEnomem(() => dmaResvInit(`dma-buf ino ${ino} ${info.expName} ${o.comm}[${o.pid}] ${o.call}`));
  st.nextIno++;
  const buf = new DmaBuf<P>(k, ops, info.size, info.expName, info.priv, ino, info.owner ?? info.expName);
  buf.resv = resv;
  buf.resvOwned = !info.resv;
  if (r) buf.remote = r.ops;
  // dma_buf_getfile: alloc_file_pseudo on the dmabuf mount. f_mode from the access mode, FMODE_LSEEK because the
  // fops have llseek; f_flags keep only the access mode and O_NONBLOCK.
  buf.file = k.allocFile<DmaBuf<P>>(
    dmaBufFops,
    buf,
    fmodeFromFlags(info.flags) | FMODE_LSEEK,
    info.flags & (O_ACCMODE | O_NONBLOCK),
    ino,
  );
  st.list.unshift(buf as DmaBuf);
  buf.trackId = k.tracker.add('dma_buf', k.origin(), () => describeBuf(buf as DmaBuf));
  return buf;
}

function describeBuf(buf: DmaBuf): string {
  const name = buf.name !== null ? ` name '${buf.name}'` : '';
  return `dma-buf ino ${buf.ino} ${buf.expName} ${buf.size} bytes${name} (file count ${buf.file.count})`;
}

/**
 * dma_buf_fd - installs the buffer's file at the task's lowest free fd. Only O_CLOEXEC of `flags` matters.
 *
 * Consumes the caller's reference on success. On EMFILE the reference is NOT consumed: the caller must
 * dmaBufPut() it (the heaps do, which releases a fresh buffer).
 */
export function dmaBufFd(k: Kernel, task: Task, buf: DmaBuf | null, flags: number): number {
  if (!buf || !buf.file) throw new KernelError(E.EINVAL);
  return k.installFd(task, buf.file, (flags & O_CLOEXEC) !== 0);
}

/** is_dma_buf_file: the file is a dma-buf's (its f_op is the dma-buf fops). */
export function isDmaBufFile(f: File): f is File<DmaBuf> {
  return f.ops === dmaBufFops;
}

/**
 * dma_buf_get - the dma-buf behind a task's fd, with one more file reference (drop it with dmaBufPut).
 * EBADF when the fd is not open; EINVAL when it is open on something else.
 */
export function dmaBufGet(k: Kernel, task: Task, fd: number): DmaBuf {
  const e = task.getFd(fd);
  if (!e) throw new KernelError(E.EBADF);
  if (!isDmaBufFile(e.file)) throw new KernelError(E.EINVAL);
  k.fget(e.file);
  return e.file.privateData;
}

/** dma_buf_put - drops one file reference; the last one releases the buffer (synchronously, now). */
export function dmaBufPut(k: Kernel, buf: DmaBuf | null): void {
  if (!buf || !buf.file) {
    warn('dma_buf_put: WARN_ON(!dmabuf || !dmabuf->file)');
    return;
  }
  k.fput(buf.file);
}

// ---- attachments and device mappings --------------------------------------------------------------------------

/**
 * __map_dma_buf: the exporter's map, then — for a static importer, which cannot follow moves and so must not see
 * the buffer before the exporter's moves/clears finished — dma_resv_wait_timeout(KERNEL). Dynamic importers wait
 * themselves. The broker cannot sleep here (atomic context, fence-wait.ts): with KERNEL fences pending the mapping
 * is undone and EAGAIN thrown, as the C code unmaps when its wait fails; dmaBufMapAttachmentAsync waits instead.
 */
function mapDmaBufInternal<P>(att: DmaBufAttachment<P>, dir: DmaDataDirection): SgTable {
  const buf = att.dmabuf;
  const sgt = buf.ops.mapDmaBuf(att, dir);
  if (!attachmentIsDynamic(att as DmaBufAttachment)) {
    try {
      mustNotSleep(buf as DmaBuf, DMA_RESV_USAGE_KERNEL, 'dma_buf_map_attachment', 'dmaBufMapAttachmentAsync');
    } catch (e) {
      buf.ops.unmapDmaBuf(att, sgt, dir);
      throw e;
    }
  }
  return sgt;
}

function unmapDmaBufInternal<P>(att: DmaBufAttachment<P>, sgt: SgTable, dir: DmaDataDirection): void {
  att.dmabuf.ops.unmapDmaBuf(att, sgt, dir);
}

/**
 * dma_buf_dynamic_attach - attaches `dev` to the buffer. `importerOps` (with moveNotify) makes a dynamic
 * importer; null a static one.
 *
 * The exporter's attach may refuse (its error is thrown). The attachment joins the buffer's list (newest first)
 * and takes NO file reference: the importer keeps its own dma_buf_get() reference. When exactly one side is
 * dynamic, the core maps the buffer BIDIRECTIONAL now (pinning a dynamic exporter) and caches that mapping for
 * the attachment's lifetime. On any failure after ops.attach the attachment is detached again. For a static
 * importer on a dynamic exporter that mapping waits for KERNEL fences: with some pending this fails with EAGAIN
 * (atomic context); an event-loop caller awaits dmaResvWaitAsync(buf.resv, KERNEL) first.
 */
export function dmaBufDynamicAttach<P>(
  k: Kernel,
  buf: DmaBuf<P>,
  dev: Device,
  importerOps: DmaBufAttachOps<P> | null = null,
  importerPriv: unknown = null,
): DmaBufAttachment<P> {
  if (!buf || !dev) {
    warn('dma_buf_dynamic_attach: WARN_ON(!dmabuf || !dev)');
    throw new KernelError(E.EINVAL);
  }
  if (importerOps && !importerOps.moveNotify) {
    warn('dma_buf_dynamic_attach: WARN_ON(importer_ops && !move_notify)');
    throw new KernelError(E.EINVAL);
  }
  const att = new DmaBufAttachment<P>(buf, dev, importerOps, importerPriv);
  buf.ops.attach?.(buf, att);
  buf.attachments.unshift(att);
  att.trackId = k.tracker.add('dma_buf_attachment', k.origin(), () => `attachment of ${dev.name} to dma-buf ino ${buf.ino}`);
  if (attachmentIsDynamic(att as DmaBufAttachment) !== isDynamic(buf as DmaBuf)) {
    let pinned = false;
    try {
      if (isDynamic(buf as DmaBuf)) {
        buf.ops.pin!(att);
        buf.pins++;
        pinned = true;
      }
      att.sgt = mapDmaBufInternal(att, DMA_BIDIRECTIONAL);
      att.dir = DMA_BIDIRECTIONAL;
    } catch (e) {
      if (pinned) {
        buf.ops.unpin!(att);
        buf.pins--;
      }
      dmaBufDetach(k, buf, att);
      throw e;
    }
  }
  return att;
}

/** dma_buf_attach - a static importer's attach (dma_buf_dynamic_attach without importer ops). */
export function dmaBufAttach<P>(k: Kernel, buf: DmaBuf<P>, dev: Device): DmaBufAttachment<P> {
  return dmaBufDynamicAttach(k, buf, dev, null, null);
}

/**
 * dma_buf_detach - removes an attachment: first unmaps the mapping the core cached for it (and unpins a dynamic
 * exporter), then leaves the list, then the exporter's detach.
 */
export function dmaBufDetach<P>(k: Kernel, buf: DmaBuf<P>, att: DmaBufAttachment<P>): void {
  if (!buf || !att) {
    warn('dma_buf_detach: WARN_ON(!dmabuf || !attach)');
    return;
  }
  if (att.sgt) {
    unmapDmaBufInternal(att, att.sgt, att.dir);
    if (isDynamic(buf as DmaBuf)) {
      buf.ops.unpin!(att);
      buf.pins--;
    }
    att.sgt = null;
  }
  const i = buf.attachments.indexOf(att);
  if (i >= 0) buf.attachments.splice(i, 1);
  buf.ops.detach?.(buf, att);
  k.tracker.remove(att.trackId);
}

/** dma_buf_pin - a dynamic importer locks the buffer in place (only dynamic importers may call it). */
export function dmaBufPin<P>(_k: Kernel, att: DmaBufAttachment<P>): void {
  if (!attachmentIsDynamic(att as DmaBufAttachment)) warn('dma_buf_pin: WARN_ON(!dma_buf_attachment_is_dynamic)');
  att.dmabuf.ops.pin?.(att);
  att.dmabuf.pins++;
}

/** dma_buf_unpin - undoes dmaBufPin. */
export function dmaBufUnpin<P>(_k: Kernel, att: DmaBufAttachment<P>): void {
  if (!attachmentIsDynamic(att as DmaBufAttachment)) warn('dma_buf_unpin: WARN_ON(!dma_buf_attachment_is_dynamic)');
  att.dmabuf.ops.unpin?.(att);
  att.dmabuf.pins--;
}

/**
 * The cache_sgt_mapping rule both map paths share: the attachment's cached table if it has one (EBUSY when the
 * direction differs and the cached one is not BIDIRECTIONAL), else null.
 */
function cachedMapping<P>(att: DmaBufAttachment<P>, dir: DmaDataDirection): SgTable | null {
  if (!att.sgt) return null;
  if (att.dir !== dir && att.dir !== DMA_BIDIRECTIONAL) throw new KernelError(E.EBUSY);
  return att.sgt;
}

/**
 * dma_buf_map_attachment - the scatter list of the buffer, mapped for the attachment's device.
 *
 * With a cached mapping (cache_sgt_mapping, or the one made at attach): returned again without calling the
 * exporter, unless the direction differs and the cached one is not BIDIRECTIONAL — then EBUSY. Otherwise the
 * exporter maps (a dynamic exporter is pinned around it while move notification is off), and with
 * cache_sgt_mapping the result is cached.
 */
export function dmaBufMapAttachment<P>(_k: Kernel, att: DmaBufAttachment<P>, dir: DmaDataDirection): SgTable {
  if (!att || !att.dmabuf) {
    warn('dma_buf_map_attachment: WARN_ON(!attach || !attach->dmabuf)');
    throw new KernelError(E.EINVAL);
  }
  const cached = cachedMapping(att, dir);
  if (cached) return cached;
  const buf = att.dmabuf;
  const dynamic = isDynamic(buf as DmaBuf);
  if (dynamic && !CONFIG_DMABUF_MOVE_NOTIFY) {
    buf.ops.pin!(att);
    buf.pins++;
  }
  let sgt: SgTable;
  try {
    sgt = mapDmaBufInternal(att, dir);
  } catch (e) {
    if (dynamic && !CONFIG_DMABUF_MOVE_NOTIFY) {
      buf.ops.unpin!(att);
      buf.pins--;
    }
    throw e;
  }
  if (buf.ops.cacheSgtMapping) {
    att.sgt = sgt;
    att.dir = dir;
  }
  return sgt;
}

/** dma_buf_unmap_attachment - undoes a map; a no-op for the cached table (that one goes at detach). */
export function dmaBufUnmapAttachment<P>(k: Kernel, att: DmaBufAttachment<P>, sgt: SgTable, dir: DmaDataDirection): void {
  if (!att || !att.dmabuf || !sgt) {
    warn('dma_buf_unmap_attachment: WARN_ON(!attach || !attach->dmabuf || !sg_table)');
    return;
  }
  if (att.sgt === sgt) return;
  unmapDmaBufInternal(att, sgt, dir);
  if (isDynamic(att.dmabuf as DmaBuf) && !CONFIG_DMABUF_MOVE_NOTIFY) dmaBufUnpin(k, att);
}

/** dma_buf_move_notify - tells every dynamic importer the buffer is about to move. */
export function dmaBufMoveNotify<P>(_k: Kernel, buf: DmaBuf<P>): void {
  for (const att of [...buf.attachments]) att.importerOps?.moveNotify(att);
}

// ---- CPU access and kernel mappings ---------------------------------------------------------------------------

/**
 * __dma_buf_begin_cpu_access's usage: a CPU write (TO_DEVICE, BIDIRECTIONAL) waits for every reader and writer
 * (usage ≤ READ), a CPU read (FROM_DEVICE) only for writers (usage ≤ WRITE). BOOKKEEP fences are never waited for.
 */
export function cpuAccessUsage(dir: DmaDataDirection): DmaResvUsage {
  return dmaResvUsageRw(dir === DMA_BIDIRECTIONAL || dir === DMA_TO_DEVICE);
}

function beginCpuAccessOps<P>(_k: Kernel, buf: DmaBuf<P>, dir: DmaDataDirection): void {
  if (!buf) {
    warn('dma_buf_begin_cpu_access: WARN_ON(!dmabuf)');
    throw new KernelError(E.EINVAL);
  }
  buf.ops.beginCpuAccess?.(buf, dir);
}

/**
 * dma_buf_begin_cpu_access - before the CPU touches the buffer: the exporter's begin_cpu_access (cache
 * maintenance; its error is thrown and nothing is waited for), then the implicit fences of cpuAccessUsage(dir).
 *
 * Atomic context (fence-wait.ts): this never sleeps. With such fences still unsignaled it throws EAGAIN after
 * the exporter's hook ran (calling it again on retry is the cheap no-op the C comment promises). Syscall handlers
 * use dmaBufBeginCpuAccessSyscall, event-loop callers dmaBufBeginCpuAccessAsync.
 */
export function dmaBufBeginCpuAccess<P>(k: Kernel, buf: DmaBuf<P>, dir: DmaDataDirection): void {
  beginCpuAccessOps(k, buf, dir);
  mustNotSleep(buf as DmaBuf, cpuAccessUsage(dir), 'dma_buf_begin_cpu_access', 'dmaBufBeginCpuAccessAsync or dmaBufBeginCpuAccessSyscall');
}

/**
 * dma_buf_begin_cpu_access in syscall context (DMA_BUF_IOCTL_SYNC START): the exporter's hook now, then the
 * syscall parks until the fences of cpuAccessUsage(dir) present now have signaled (signalled by any worker; the
 * fence callbacks wake it in the broker) and returns `then()`'s result. Never blocks the broker.
 */
export function dmaBufBeginCpuAccessSyscall<P>(
  k: Kernel,
  buf: DmaBuf<P>,
  dir: DmaDataDirection,
  then: () => number,
): SyscallOutcome {
  beginCpuAccessOps(k, buf, dir);
  return dmaResvWaitSyscall(buf.resv, cpuAccessUsage(dir), then);
}

/** dma_buf_end_cpu_access - after CPU access: the exporter's end_cpu_access. */
export function dmaBufEndCpuAccess<P>(_k: Kernel, buf: DmaBuf<P>, dir: DmaDataDirection): void {
  if (!buf) warn('dma_buf_end_cpu_access: WARN_ON(!dmabuf)');
  buf.ops.endCpuAccess?.(buf, dir);
}

/**
 * dma_buf_vmap - a kernel mapping of the whole buffer.
 *
 * The core counts vmaps: while the counter is > 0 every caller gets the same mapping and the exporter is not
 * called; the first one calls ops.vmap. No vmap op → EINVAL. An exporter failure is a WARN_ON_ONCE and its error
 * is thrown. Inconsistent core state (a counter with a null mapping, or the reverse) is a BUG (thrown Error).
 */
export function dmaBufVmap<P>(_k: Kernel, buf: DmaBuf<P>): IosysMap {
  if (!buf) {
    warn('dma_buf_vmap: WARN_ON(!dmabuf)');
    throw new KernelError(E.EINVAL);
  }
  if (!buf.ops.vmap) throw new KernelError(E.EINVAL);
  const again = vmapAgain(buf as DmaBuf);
  if (again) return again;
  let map: IosysMap;
  try {
    map = buf.ops.vmap(buf);
  } catch (e) {
    vmapFailed(buf as DmaBuf, e);
    throw e;
  }
  buf.vmapPtr = map;
  buf.vmappingCounter = 1;
  return map;
}
/** The counted half of dma_buf_vmap: the mapping again (count + 1) while counted, null when the exporter must map. */
function vmapAgain(buf: DmaBuf): IosysMap | null {
  if (buf.vmappingCounter) {
    if (buf.vmapPtr.isNull) BUG(`dma_buf_vmap: dma-buf ino ${buf.ino} counted but not mapped`);
    buf.vmappingCounter++;
    return buf.vmapPtr;
  }
  if (!buf.vmapPtr.isNull) BUG(`dma_buf_vmap: dma-buf ino ${buf.ino} mapped but not counted`);
  return null;
}

function vmapFailed(buf: DmaBuf, e: unknown): void {
  if (!vmapWarned.has(buf.k)) {
    vmapWarned.add(buf.k);
    warn(`dma_buf_vmap: WARN_ON_ONCE(ops->vmap failed: ${e instanceof Error ? e.message : String(e)})`);
  }
}

/** dma_buf_vunmap's checks (BUGs) and count: true when this was the last vmap (the exporter's vunmap is due). */
function vunmapLast(buf: DmaBuf, map: IosysMap): boolean {
  if (buf.vmapPtr.isNull) BUG(`dma_buf_vunmap: dma-buf ino ${buf.ino} is not vmapped`);
  if (buf.vmappingCounter === 0) BUG(`dma_buf_vunmap: dma-buf ino ${buf.ino} vmapping_counter is 0`);
  if (!buf.vmapPtr.isEqual(map)) BUG(`dma_buf_vunmap: dma-buf ino ${buf.ino} unmapping a different mapping`);
  if (--buf.vmappingCounter !== 0) return false;
  buf.vmapPtr = IosysMap.NULL;
  return true;
}

/** WARN_ON_ONCE state of dma_buf_vmap, per kernel. */
const vmapWarned = new WeakSet<Kernel>();

/**
 * dma_buf_vunmap - drops one vmap; the last one calls ops.vunmap. BUG (a thrown Error, recorded as an oops) when
 * nothing is mapped, the counter is 0, or `map` is not the mapping the core handed out.
 */
export function dmaBufVunmap<P>(_k: Kernel, buf: DmaBuf<P>, map: IosysMap): void {
  if (!buf) {
    warn('dma_buf_vunmap: WARN_ON(!dmabuf)');
    return;
  }
  if (vunmapLast(buf as DmaBuf, map)) buf.ops.vunmap?.(buf, map);
}

// ---- the async core API: exporters in other workers ---------------------------------------------------------------
//
// The same operations as above for callers that can wait without blocking the broker (a driver's downcall, an
// event-loop control call, a parked syscall): each exporter op is awaited, so an exporter living in a driver
// worker (buf.remote, an upcall each) works as well as an in-broker one. Same checks, same order, same
// refcounts; the only difference is that where the synchronous API would have to sleep (a static importer's
// wait for KERNEL fences, a begin_cpu_access wait) these wait.

type MaybePromise<T> = T | Promise<T>;

/** The exporter's ops as the async API calls them (an in-broker exporter's are the same functions). */
interface AsyncOps {
  readonly cacheSgtMapping?: boolean;
  attach?(buf: DmaBuf, att: DmaBufAttachment): MaybePromise<void>;
  detach?(buf: DmaBuf, att: DmaBufAttachment): MaybePromise<void>;
  pin?(att: DmaBufAttachment): MaybePromise<void>;
  unpin?(att: DmaBufAttachment): MaybePromise<void>;
  mapDmaBuf(att: DmaBufAttachment, dir: DmaDataDirection): MaybePromise<SgTable>;
  unmapDmaBuf(att: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): MaybePromise<void>;
  beginCpuAccess?(buf: DmaBuf, dir: DmaDataDirection): MaybePromise<void>;
  endCpuAccess?(buf: DmaBuf, dir: DmaDataDirection): MaybePromise<void>;
  vmap?(buf: DmaBuf): MaybePromise<IosysMap>;
  vunmap?(buf: DmaBuf, map: IosysMap): MaybePromise<void>;
}

const asyncOpsOfRemote = new WeakMap<RemoteDmaBufOps, AsyncOps>();

function opsOf(buf: DmaBuf): AsyncOps {
  const r = buf.remote;
  if (!r) return buf.ops as AsyncOps;
  let o = asyncOpsOfRemote.get(r);
  if (!o) {
    const h = r.has;
    o = {
      cacheSgtMapping: buf.ops.cacheSgtMapping ?? false,
      ...(h.attach ? { attach: (b: DmaBuf, a: DmaBufAttachment) => r.attach(b, a) } : {}),
      ...(h.detach ? { detach: (b: DmaBuf, a: DmaBufAttachment) => r.detach(b, a) } : {}),
      ...(h.pin ? { pin: (a: DmaBufAttachment) => r.pin(a), unpin: (a: DmaBufAttachment) => r.unpin(a) } : {}),
      mapDmaBuf: (a, d) => r.mapDmaBuf(a, d),
      unmapDmaBuf: (a, t, d) => r.unmapDmaBuf(a, t, d),
      ...(h.beginCpuAccess ? { beginCpuAccess: (b: DmaBuf, d: DmaDataDirection) => r.beginCpuAccess(b, d) } : {}),
      ...(h.endCpuAccess ? { endCpuAccess: (b: DmaBuf, d: DmaDataDirection) => r.endCpuAccess(b, d) } : {}),
      ...(h.vmap ? { vmap: (b: DmaBuf) => r.vmap(b) } : {}),
      ...(h.vunmap ? { vunmap: (b: DmaBuf, m: IosysMap) => r.vunmap(b, m) } : {}),
    };
    asyncOpsOfRemote.set(r, o);
  }
  return o;
}

/** __map_dma_buf, waiting: the exporter's map, then a static importer waits for the KERNEL fences. */
async function mapDmaBufInternalAsync(att: DmaBufAttachment, dir: DmaDataDirection): Promise<SgTable> {
  const buf = att.dmabuf;
  const ops = opsOf(buf);
  const sgt = await ops.mapDmaBuf(att, dir);
  if (!attachmentIsDynamic(att)) {
    try {
      while (!dmaResvTestSignaled(buf.resv, DMA_RESV_USAGE_KERNEL)) {
        await dmaResvWaitAsync(buf.resv, DMA_RESV_USAGE_KERNEL, MAX_SCHEDULE_TIMEOUT);
      }
    } catch (e) {
      await ops.unmapDmaBuf(att, sgt, dir);
      throw e;
    }
  }
  return sgt;
}

/**
 * dma_buf_dynamic_attach, waiting for the exporter (see dmaBufDynamicAttach). `deferCachedMap`: stop after the
 * attachment joined the list; the caller runs dmaBufAttachCachedMapAsync itself when dmaBufAttachNeedsCachedMap
 * (a driver does, under the reservation lock it takes in its own worker).
 */
export async function dmaBufDynamicAttachAsync(
  k: Kernel,
  buf: DmaBuf,
  dev: Device,
  importerOps: DmaBufAttachOps | null = null,
  importerPriv: unknown = null,
  deferCachedMap = false,
): Promise<DmaBufAttachment> {
  if (!buf || !dev) {
    warn('dma_buf_dynamic_attach: WARN_ON(!dmabuf || !dev)');
    throw new KernelError(E.EINVAL);
  }
  if (importerOps && !importerOps.moveNotify) {
    warn('dma_buf_dynamic_attach: WARN_ON(importer_ops && !move_notify)');
    throw new KernelError(E.EINVAL);
  }
  const ops = opsOf(buf);
  const att = new DmaBufAttachment(buf, dev, importerOps, importerPriv);
  await ops.attach?.(buf, att);
  buf.attachments.unshift(att);
  att.trackId = k.tracker.add('dma_buf_attachment', k.origin(), () => `attachment of ${dev.name} to dma-buf ino ${buf.ino}`);
  if (!deferCachedMap && dmaBufAttachNeedsCachedMap(att)) {
    try {
      await dmaBufAttachCachedMapAsync(att);
    } catch (e) {
      await dmaBufDetachAsync(k, buf, att);
      throw e;
    }
  }
  return att;
}

/**
 * Whether dma_buf_dynamic_attach maps the buffer at attach and caches the mapping: exactly one side (importer,
 * exporter) is dynamic.
 */
export function dmaBufAttachNeedsCachedMap(att: DmaBufAttachment): boolean {
  return attachmentIsDynamic(att) !== isDynamic(att.dmabuf);
}

/**
 * The second half of dma_buf_dynamic_attach, which mainline runs under the reservation lock: pins a dynamic
 * exporter, maps BIDIRECTIONAL (a static importer waits for KERNEL fences) and caches the table on the attachment.
 * On failure the pin is undone and the error thrown; the caller detaches (after dropping the reservation lock, as
 * dma_buf_dynamic_attach's error path does). Locking: the caller holds buf.resv (a driver, in its own worker).
 */
export async function dmaBufAttachCachedMapAsync(att: DmaBufAttachment): Promise<void> {
  const buf = att.dmabuf;
  const ops = opsOf(buf);
  let pinned = false;
  try {
    if (isDynamic(buf)) {
      await ops.pin!(att);
      buf.pins++;
      pinned = true;
    }
    att.sgt = await mapDmaBufInternalAsync(att, DMA_BIDIRECTIONAL);
    att.dir = DMA_BIDIRECTIONAL;
  } catch (e) {
    if (pinned) {
      buf.pins--;
      await ops.unpin!(att);
    }
    throw e;
  }
}

/**
 * The first half of dma_buf_detach, which mainline runs under the reservation lock: unmaps the table the core
 * cached for the attachment and unpins a dynamic exporter. A no-op when nothing is cached. The exporter's failure
 * (a dead driver) is thrown after the attachment's cached table is forgotten.
 */
export async function dmaBufDetachUnmapAsync(att: DmaBufAttachment): Promise<void> {
  const sgt = att.sgt;
  if (!sgt) return;
  const buf = att.dmabuf;
  const ops = opsOf(buf);
  att.sgt = null;
  await ops.unmapDmaBuf(att, sgt, att.dir);
  if (isDynamic(buf)) {
    buf.pins--;
    await ops.unpin!(att);
  }
}

/**
 * dma_buf_detach, waiting for the exporter. The attachment leaves the list (and the tracker) even when the
 * exporter fails (a dead driver answers ENODEV): an importer can always detach.
 */
export async function dmaBufDetachAsync(k: Kernel, buf: DmaBuf, att: DmaBufAttachment): Promise<void> {
  if (!buf || !att) {
    warn('dma_buf_detach: WARN_ON(!dmabuf || !attach)');
    return;
  }
  const i = buf.attachments.indexOf(att);
  if (i < 0) return;
  const ops = opsOf(buf);
  buf.attachments.splice(i, 1);
  k.tracker.remove(att.trackId);
  // An attachment that outlived the buffer's release (its importer put the last reference while attached: the
  // release WARNed): the exporter has forgotten the buffer, so only the core's bookkeeping goes.
  if (buf.file.count === 0) return;
  let failed: unknown = null;
  try {
    await dmaBufDetachUnmapAsync(att);
  } catch (e) {
    failed = e;
  }
  try {
    await ops.detach?.(buf, att);
  } catch (e) {
    failed ??= e;
  }
  if (failed) throw failed;
}

/** dma_buf_map_attachment, waiting (see dmaBufMapAttachment): a static importer also waits for KERNEL fences. */
export async function dmaBufMapAttachmentAsync(_k: Kernel, att: DmaBufAttachment, dir: DmaDataDirection): Promise<SgTable> {
  if (!att || !att.dmabuf) {
    warn('dma_buf_map_attachment: WARN_ON(!attach || !attach->dmabuf)');
    throw new KernelError(E.EINVAL);
  }
  const cached = cachedMapping(att, dir);
  if (cached) return cached;
  const buf = att.dmabuf;
  const ops = opsOf(buf);
  const dynamic = isDynamic(buf);
  if (dynamic && !CONFIG_DMABUF_MOVE_NOTIFY) {
    await ops.pin!(att);
    buf.pins++;
  }
  let sgt: SgTable;
  try {
    sgt = await mapDmaBufInternalAsync(att, dir);
  } catch (e) {
    if (dynamic && !CONFIG_DMABUF_MOVE_NOTIFY) {
      buf.pins--;
      await ops.unpin!(att);
    }
    throw e;
  }
  if (ops.cacheSgtMapping) {
    // Another map of this attachment finished first while the exporter answered: keep the first (the C code
    // holds the resv lock across; callers of one attachment serialize there).
    const again = cachedMapping(att, dir);
    if (again) {
      await ops.unmapDmaBuf(att, sgt, dir);
      return again;
    }
    att.sgt = sgt;
    att.dir = dir;
  }
  return sgt;
}

// ---- the async API's synchronous fast paths ---------------------------------------------------------------------
//
// The parts of map, vmap and vunmap that never reach the exporter, for callers of the async API that want no
// await when none is needed (a driver's downcall answered in the serve pass that read it, not after an event-loop
// turn). Each does exactly what its async counterpart would do up to its first exporter call — or nothing and
// returns null/false, and the caller takes the async path.

/**
 * dma_buf_map_attachment's cached case: the attachment's cached table (EBUSY for another direction unless it is
 * bidirectional, as the full path), or null when the exporter must map. The same checks as the async API first.
 */
export function dmaBufMapAttachmentCached(att: DmaBufAttachment, dir: DmaDataDirection): SgTable | null {
  if (!att || !att.dmabuf) return null; // the async path WARNs
  return cachedMapping(att, dir);
}

/** dma_buf_vmap while counted: the mapping again (count + 1), or null when the exporter must map (or one is pending). */
export function dmaBufVmapCounted(buf: DmaBuf): IosysMap | null {
  if (!buf || buf.vmapPending || !buf.vmappingCounter || !opsOf(buf).vmap) return null;
  return vmapAgain(buf);
}

/** dma_buf_vunmap of one of several counted vmaps of `map` (no exporter call): true when done, else false. */
export function dmaBufVunmapCounted(buf: DmaBuf, map: IosysMap): boolean {
  if (!buf || buf.vmappingCounter < 2 || buf.vmapPtr.isNull || !buf.vmapPtr.isEqual(map)) return false;
  buf.vmappingCounter--;
  return true;
}

/** dma_buf_unmap_attachment, waiting (a no-op for the cached table). */
export async function dmaBufUnmapAttachmentAsync(_k: Kernel, att: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): Promise<void> {
  if (!att || !att.dmabuf || !sgt) {
    warn('dma_buf_unmap_attachment: WARN_ON(!attach || !attach->dmabuf || !sg_table)');
    return;
  }
  if (att.sgt === sgt) return;
  const buf = att.dmabuf;
  const ops = opsOf(buf);
  await ops.unmapDmaBuf(att, sgt, dir);
  if (isDynamic(buf) && !CONFIG_DMABUF_MOVE_NOTIFY) {
    buf.pins--;
    await ops.unpin!(att);
  }
}

/** dma_buf_pin / dma_buf_unpin, waiting. */
export async function dmaBufPinAsync(_k: Kernel, att: DmaBufAttachment, pin: boolean): Promise<void> {
  if (!attachmentIsDynamic(att)) warn(`dma_buf_${pin ? '' : 'un'}pin: WARN_ON(!dma_buf_attachment_is_dynamic)`);
  const ops = opsOf(att.dmabuf);
  if (pin) {
    await ops.pin?.(att);
    att.dmabuf.pins++;
  } else {
    att.dmabuf.pins--;
    await ops.unpin?.(att);
  }
}

/**
 * dma_buf_move_notify, waiting for each dynamic importer's moveNotify (an importer in a driver worker answers
 * when its mappings are dropped). A pinned buffer cannot move: EBUSY (the model's check of the rule that the
 * exporter moves only unpinned buffers).
 */
export async function dmaBufMoveNotifyAsync(_k: Kernel, buf: DmaBuf): Promise<void> {
  if (buf.pins > 0) throw new KernelError(E.EBUSY, `dma-buf ino ${buf.ino} is pinned (${buf.pins})`);
  for (const att of [...buf.attachments]) await (att.importerOps?.moveNotify(att) as unknown);
}

/**
 * dma_buf_begin_cpu_access in event-loop context: the exporter's hook (awaited), then resolves once the fences of
 * cpuAccessUsage(dir) present now have signaled (Atomics.waitAsync: the broker keeps serving meanwhile). The
 * caller holds a buffer reference until it settles and must not hold the resv lock across it.
 */
export async function dmaBufBeginCpuAccessAsync(_k: Kernel, buf: DmaBuf, dir: DmaDataDirection): Promise<void> {
  if (!buf) {
    warn('dma_buf_begin_cpu_access: WARN_ON(!dmabuf)');
    throw new KernelError(E.EINVAL);
  }
  await opsOf(buf).beginCpuAccess?.(buf, dir);
  await dmaResvWaitAsync(buf.resv, cpuAccessUsage(dir), MAX_SCHEDULE_TIMEOUT);
}

/** dma_buf_end_cpu_access, waiting for the exporter's hook. */
export async function dmaBufEndCpuAccessAsync(_k: Kernel, buf: DmaBuf, dir: DmaDataDirection): Promise<void> {
  if (!buf) warn('dma_buf_end_cpu_access: WARN_ON(!dmabuf)');
  await opsOf(buf).endCpuAccess?.(buf, dir);
}

/**
 * dma_buf_vmap, waiting for the exporter: the first vmap calls it; vmaps arriving while it answers wait for that
 * answer and share the mapping (the callers also serialize on the buffer's lock in their own workers — this keeps
 * the count right even for one that does not).
 */
export async function dmaBufVmapAsync(_k: Kernel, buf: DmaBuf): Promise<IosysMap> {
  if (!buf) {
    warn('dma_buf_vmap: WARN_ON(!dmabuf)');
    throw new KernelError(E.EINVAL);
  }
  const ops = opsOf(buf);
  if (!ops.vmap) throw new KernelError(E.EINVAL);
  while (buf.vmapPending) {
    try {
      await buf.vmapPending;
    } catch {
      // The first caller reports the failure; this one tries again.
    }
  }
  const again = vmapAgain(buf);
  if (again) return again;
  const p = Promise.resolve(ops.vmap(buf));
  buf.vmapPending = p;
  let map: IosysMap;
  try {
    map = await p;
  } catch (e) {
    vmapFailed(buf, e);
    throw e;
  } finally {
    buf.vmapPending = null;
  }
  buf.vmapPtr = map;
  buf.vmappingCounter = 1;
  return map;
}

/** dma_buf_vunmap, waiting for the exporter's vunmap when it was the last (same BUGs as dmaBufVunmap). */
export async function dmaBufVunmapAsync(_k: Kernel, buf: DmaBuf, map: IosysMap): Promise<void> {
  if (!buf) {
    warn('dma_buf_vunmap: WARN_ON(!dmabuf)');
    return;
  }
  if (vunmapLast(buf, map)) await opsOf(buf).vunmap?.(buf, map);
}

// ---- the dma-buf file -----------------------------------------------------------------------------------------

/**
 * dma_buf_set_name: strndup_user(arg, DMA_BUF_NAME_LEN) — 32 or more bytes (the limit counts bytes, not
 * characters) EINVAL, no buffer EFAULT; "" is a name. The kernel keeps the bytes; the model keeps them as the
 * UTF-8 text they spell, so fdinfo and readlink give back what the process wrote.
 */
function setName(buf: DmaBuf, arg: UserPtr): number {
  buf.name = Buffer.from(arg.strndup(DMA_BUF_NAME_LEN), 'latin1').toString('utf8');
  return 0;
}

/**
 * dma_buf_ioctl - exact cmd match, anything else ENOTTY.
 *
 * SYNC: flags outside READ|WRITE|END → EINVAL, neither READ nor WRITE → EINVAL; START → begin_cpu_access and a
 * wait for the implicit fences (a parked syscall, see dmaBufBeginCpuAccessSyscall), END → end_cpu_access. The
 * START/END counts per direction are kept on the buffer (a START counts once its wait is over; never an error on
 * an unpaired END).
 */
function dmaBufIoctl(f: File, cmd: number, arg: UserPtr, task: Task): SyscallOutcome {
  const buf = (f as File<DmaBuf>).privateData;
  const k = buf.k;
  switch (cmd) {
    case DMA_BUF_IOCTL_SYNC: {
      const flags = arg.u64big(0); // copy_from_user: EFAULT when short
      if (flags & ~BigInt(DMA_BUF_SYNC_VALID_FLAGS_MASK)) throw new KernelError(E.EINVAL);
      let dir: DmaDataDirection;
      switch (Number(flags & BigInt(DMA_BUF_SYNC_RW))) {
        case DMA_BUF_SYNC_READ:
          dir = DMA_FROM_DEVICE;
          break;
        case DMA_BUF_SYNC_WRITE:
          dir = DMA_TO_DEVICE;
          break;
        case DMA_BUF_SYNC_RW:
          dir = DMA_BIDIRECTIONAL;
          break;
        default:
          throw new KernelError(E.EINVAL);
      }
      const count = buf.cpuSync[dir as 0 | 1 | 2];
      if (buf.remote) {
        // The exporter's hooks run in its worker: the call parks until it answered (and, for START, the fences).
        const end = (flags & BigInt(DMA_BUF_SYNC_END)) !== 0n;
        const p = end ? dmaBufEndCpuAccessAsync(k, buf, dir) : dmaBufBeginCpuAccessAsync(k, buf, dir);
        return blockOnPromise(p, () => {
          if (end) count.end++;
          else count.start++;
          return 0;
        });
      }
      if (flags & BigInt(DMA_BUF_SYNC_END)) {
        dmaBufEndCpuAccess(k, buf, dir);
        count.end++;
        return 0;
      }
      return dmaBufBeginCpuAccessSyscall(k, buf, dir, () => {
        count.start++;
        return 0;
      });
    }
    case DMA_BUF_SET_NAME_A:
    case DMA_BUF_SET_NAME_B:
      return setName(buf, arg);
    case DMA_BUF_IOCTL_EXPORT_SYNC_FILE:
      return dmaBufExportSyncFile(buf, arg, task);
    case DMA_BUF_IOCTL_IMPORT_SYNC_FILE:
      return dmaBufImportSyncFile(buf, arg, task);
    default:
      throw new KernelError(E.ENOTTY);
  }
}

/**
 * dma_buf_mmap_internal: no exporter mmap → EINVAL; a range past the buffer's pages → EINVAL. An exporter in a
 * driver worker answers asynchronously (the mmap syscall parks on the promise).
 */
function dmaBufMmapInternal(f: File, vma: Vma): void | Promise<void> {
  const buf = (f as File<DmaBuf>).privateData;
  if (!buf.ops.mmap) throw new KernelError(E.EINVAL);
  if (vma.pgoff + vma.length / PAGE_SIZE > Math.floor(buf.size / 2 ** PAGE_SHIFT)) throw new KernelError(E.EINVAL);
  if (buf.remote) return buf.remote.mmap(buf, vma);
  buf.ops.mmap(buf, vma);
}

/**
 * dma_buf_llseek: only "where is the end": SEEK_END → size, SEEK_SET → 0, with offset 0; anything else EINVAL.
 * f_pos is not moved (the C code returns the position without storing it).
 */
function dmaBufLlseek(f: File, offset: number, whence: number): number {
  const buf = (f as File<DmaBuf>).privateData;
  let base: number;
  if (whence === SEEK_END) base = buf.size;
  else if (whence === SEEK_SET) base = 0;
  else throw new KernelError(E.EINVAL);
  if (offset !== 0) throw new KernelError(E.EINVAL);
  return base + offset;
}

/**
 * dma_buf_poll_cb: a poll slot's fence signaled (or, with `fence` null, nothing was there to wait for). Clears the
 * slot, wakes the pollers, puts the fence reference and the file reference the armed slot held — which may be the
 * buffer's last (a poll outliving every fd), releasing it here.
 *
 * Runs in the broker: from its fence-callback pump (the signal came from any worker), inside dma_fence_signal
 * when the broker signals, or inline from dma_buf_poll. The wake is deferred (Kernel.defer), as the kernel's wake
 * only marks the pollers runnable: their retries re-enter dma_buf_poll, which must not happen from inside it (it
 * would recurse), and the other callbacks of the same signal (cb_in and cb_out on one fence) run first, so a
 * woken poller sees both slots free.
 */
function dmaBufPollCb(buf: DmaBuf, dcb: DmaBufPollCb, fence: DmaFence | null): void {
  dcb.active = 0;
  buf.k.defer(() => buf.poll.wake());
  dmaFencePut(fence);
  buf.k.fput(buf.file); // paired with the fget in dma_buf_poll
}

/**
 * dma_buf_poll_add_cb: arms `dcb` on the first fence of usage ≤ usage_rw(write) that is not signaled yet (the
 * locked iterator walks signaled ones too; add_callback refuses those with -ENOENT). The callback owns a fence
 * reference. Resv lock held. False when there is nothing to wait for.
 */
function dmaBufPollAddCb(buf: DmaBuf, write: boolean, dcb: DmaBufPollCb, locked: boolean): boolean {
  const usage = dmaResvUsageRw(write);
  const cursor = new DmaResvIter(buf.resv, usage);
  if (locked) {
    for (const fence of dmaResvForEachFence(cursor, buf.resv, usage)) {
      dmaFenceGet(fence);
      if (dmaFenceAddCallback(fence, dcb.cb, (f) => dmaBufPollCb(buf, dcb, f)) === 0) return true;
      dmaFencePut(fence);
    }
    return false;
  }
  // A driver holds the lock and the broker must not wait for it: the unlocked (RCU) walk instead — the same
  // answer as before or after the holder's change, since the callback slot itself is broker state.
  dmaResvIterBegin(cursor, buf.resv, usage);
  try {
    for (const fence of dmaResvForEachFenceUnlocked(cursor)) {
      dmaFenceGet(fence);
      if (dmaFenceAddCallback(fence, dcb.cb, (f) => dmaBufPollCb(buf, dcb, f)) === 0) return true;
      dmaFencePut(fence);
    }
  } finally {
    dmaResvIterEnd(cursor);
  }
  return false;
}

/**
 * dma_buf_poll: EPOLLIN (reading is safe) when the WRITE and KERNEL fences have signaled, EPOLLOUT (writing is
 * safe) when every READ, WRITE and KERNEL fence has; BOOKKEEP fences never count. Only the requested events
 * (poll_requested_events) are evaluated, EPOLLOUT first.
 *
 * Each direction has one callback slot. A free slot is armed (taking a file reference) on the first unsignaled
 * fence: if there is one the direction is not ready and the callback will wake the pollers; if not, the slot is
 * released at once and the direction is ready. While a slot is armed, polling that direction reports "not ready"
 * without looking at the fences. A poll that returns — even with timeout 0, even if the process then exits —
 * leaves an armed slot behind, and its file reference keeps the buffer alive until the fence signals.
 */
function dmaBufPoll(f: File, pt: PollTable | null): number {
  const buf = (f as File<DmaBuf>).privateData;
  if (!buf || !buf.resv) return POLLERR;
  const resv = buf.resv;
  pt?.wait(buf.poll);
  let events = pollRequestedEvents(pt) & (POLLIN | POLLOUT);
  if (!events) return 0;
  // dma_resv_lock(resv, NULL), without ever sleeping in the broker: a live holder (a driver) means the unlocked walk.
  const locked = dmaResvLockNoWait(resv) !== -E.EBUSY;
  try {
    for (const [ev, dcb, write] of [
      [POLLOUT, buf.cbOut, true],
      [POLLIN, buf.cbIn, false],
    ] as const) {
      if (!(events & ev)) continue;
      // The slot check (under dmabuf->poll.lock in C).
      if (dcb.active) {
        events &= ~ev;
        continue;
      }
      dcb.active = ev;
      buf.k.fget(buf.file); // paired with the fput in dma_buf_poll_cb
      if (!dmaBufPollAddCb(buf, write, dcb, locked)) dmaBufPollCb(buf, dcb, null);
      else events &= ~ev;
    }
  } finally {
    if (locked) dmaResvUnlock(resv);
  }
  return events;
}

/** dma_buf_show_fdinfo; the count leaves out the temporary reference procfs holds while printing. */
function dmaBufShowFdinfo(f: File): string {
  const buf = (f as File<DmaBuf>).privateData;
  let s = `size:\t${buf.size}\ncount:\t${f.count - 1}\nexp_name:\t${buf.expName}\n`;
  if (buf.name !== null) s += `name:\t${buf.name}\n`;
  return s;
}

/** dmabuffs_dname: "/dmabuf:<name>", the name part empty when unnamed or named "". */
function dmaBufDname(f: File): string {
  const buf = (f as File<DmaBuf>).privateData;
  const name = buf.name !== null ? buf.name.slice(0, DMA_BUF_NAME_LEN - 1) : '';
  return `/dmabuf:${name}`;
}

/**
 * Last reference: dma_buf_file_release (leave the global list), then the dentry's dma_buf_release: BUG if still
 * vmapped, BUG if a poll callback slot is still active (its pending callback owns a file reference, so reaching
 * here with one armed means a reference imbalance), the exporter's release, the buffer's own resv finalised
 * (every fence put; an exporter's resv is left alone), WARN if attachments remain.
 */
function dmaBufFileRelease(f: File): void {
  const buf = (f as File<DmaBuf>).privateData;
  const k = buf.k;
  const list = subsys(k).list;
  const i = list.indexOf(buf);
  if (i >= 0) list.splice(i, 1);
  if (buf.vmappingCounter) BUG(`dma-buf ino ${buf.ino} released while vmapped (${buf.vmappingCounter})`);
  if (buf.cbIn.active || buf.cbOut.active) {
    BUG(
      `dma-buf ino ${buf.ino} released with an active poll callback (cb_in ${buf.cbIn.active}, cb_out ` +
        `${buf.cbOut.active}): file reference imbalance in dma_buf_poll / dma_buf_poll_cb`,
    );
  }
  buf.ops.release(buf);
  if (buf.resvOwned) dmaResvFini(buf.resv);
  if (buf.attachments.length > 0) {
    warn(`dma_buf_release: WARN_ON(!list_empty(&dmabuf->attachments)): dma-buf ino ${buf.ino} has ${buf.attachments.length} attachment(s)`);
  }
  k.tracker.remove(buf.trackId);
}

/** dma_buf_fops. No read/write: read(2)/write(2) fail with EINVAL in the VFS. */
export const dmaBufFops: FileOperations = {
  kind: 'dmabuf',
  dname: dmaBufDname,
  ioctl: (f, cmd, arg, ctx) => dmaBufIoctl(f, cmd, arg, ctx.task),
  mmap: dmaBufMmapInternal,
  poll: dmaBufPoll,
  llseek: dmaBufLlseek,
  showFdinfo: dmaBufShowFdinfo,
  release: dmaBufFileRelease,
};

// ---- debugfs ---------------------------------------------------------------------------------------------------

const padRight = (s: string, w: number): string => s.padEnd(w, ' ');
const zeroPad = (n: number, w: number): string => String(n).padStart(w, '0');
const hex08 = (n: number): string => (n >>> 0).toString(16).padStart(8, '0');

/**
 * dma_buf_debug_show: /sys/kernel/debug/dma_buf/bufinfo, byte for byte. Buffers newest first; per buffer, with its
 * resv locked: the header line, dma_resv_describe's fence lines ("\t<kernel|write|read> fence:<driver>
 * <timeline> seq <n> [un]signalled\n" for every fence of usage ≤ READ, signaled ones included, BOOKKEEP never),
 * its attached devices newest first; after the unlock the device count; then the totals.
 */
export function dmaBufDebugShow(k: Kernel): string {
  let s = '\nDma-buf Objects:\n';
  s += `${padRight('size', 8)}\t${padRight('flags', 8)}\t${padRight('mode', 8)}\t${padRight('count', 8)}\texp_name\t${padRight('ino', 8)}\tname\n`;
  let count = 0;
  let size = 0;
  for (const buf of subsys(k).list) {
    const f = buf.file;
    // dma_resv_lock_interruptible, without sleeping in the broker: while a driver holds it, the fence lines come
    // from a consistent snapshot of the list instead.
    const locked = dmaResvLockNoWait(buf.resv) !== -E.EBUSY;
    s += `${zeroPad(buf.size, 8)}\t${hex08(f.flags)}\t${hex08(f.fmode | FMODE_OPENED)}\t${zeroPad(f.count, 8)}\t${buf.expName}\t${zeroPad(buf.ino, 8)}\t${buf.name ?? '<none>'}\n`;
    s += locked ? dmaResvDescribe(buf.resv) : dmaResvDescribeUnlocked(buf.resv);
    s += '\tAttached Devices:\n';
    for (const att of buf.attachments) s += `\t${att.dev.name}\n`;
    if (locked) dmaResvUnlock(buf.resv);
    s += `Total ${buf.attachments.length} devices attached\n\n`;
    count++;
    size += buf.size;
  }
  s += `\nTotal ${count} objects, ${size} bytes\n`;
  return s;
}

/** dma_buf_init (subsys_initcall): the global list, the inode counter, debugfs dma_buf/bufinfo. */
export function dmaBufInit(k: Kernel): void {
  dmaBufState.init(k, { list: [], nextIno: 1 });
  k.debugfs.set('dma_buf/bufinfo', () => dmaBufDebugShow(k));
}

/** A plain-data snapshot of one buffer, for the control plane (tests, demos, the later ownership checker). */
export interface DmaBufSnapshot {
  readonly ino: number;
  readonly size: number;
  readonly expName: string;
  readonly name: string | null;
  /** f_count: fds, mappings and kernel references together. */
  readonly fileCount: number;
  readonly fileFlags: number;
  readonly fileMode: number;
  /** dev_name of each attachment, newest first. */
  readonly attachments: string[];
  readonly vmappingCounter: number;
  /** DMA_BUF_IOCTL_SYNC START/END counts by direction. */
  readonly cpuSync: { readonly rw: CpuAccessCount; readonly write: CpuAccessCount; readonly read: CpuAccessCount };
  /** Every entry of the reservation object in table order, signaled ones and BOOKKEEP included. */
  readonly fences: DmaBufFenceSnapshot[];
  /** Poll callback slots armed (each holds a file reference): EPOLLIN / EPOLLOUT or 0. */
  readonly pollActive: { readonly in: number; readonly out: number };
}

/** One dma_resv entry, as plain data. */
export interface DmaBufFenceSnapshot {
  readonly usage: (typeof DMA_RESV_USAGE_NAMES)[number];
  readonly driver: string;
  readonly timeline: string;
  readonly context: number;
  readonly seqno: bigint;
  readonly signaled: boolean;
}

export function dmaBufSnapshot(buf: DmaBuf): DmaBufSnapshot {
  const [rw, write, read] = buf.cpuSync;
  return {
    ino: buf.ino,
    size: buf.size,
    expName: buf.expName,
    name: buf.name,
    fileCount: buf.file.count,
    fileFlags: buf.file.flags,
    fileMode: buf.file.fmode | FMODE_OPENED,
    attachments: buf.attachments.map((a) => a.dev.name),
    vmappingCounter: buf.vmappingCounter,
    cpuSync: { rw: { ...rw }, write: { ...write }, read: { ...read } },
    fences: dmaResvEntries(buf.resv).map((e) => ({
      usage: DMA_RESV_USAGE_NAMES[e.usage],
      driver: e.fence.driverName,
      timeline: e.fence.timelineName,
      context: e.fence.context,
      seqno: e.fence.seqno,
      signaled: dmaFenceIsSignaled(e.fence),
    })),
    pollActive: { in: buf.cbIn.active, out: buf.cbOut.active },
  };
}

// ---- sync_file export / import ----------------------------------------------------------------------------------

/** The flag checks both sync_file ioctls share: copy_from_user (EFAULT), then non-zero flags within RW (EINVAL). */
function syncFileArgFlags(arg: UserPtr): number {
  arg.copyFrom(dma_buf_export_sync_file.SIZE);
  const flags = arg.u32(dma_buf_export_sync_file.flags);
  if (flags & ~DMA_BUF_SYNC_RW) throw new KernelError(E.EINVAL);
  if ((flags & DMA_BUF_SYNC_RW) === 0) throw new KernelError(E.EINVAL);
  return flags;
}

/**
 * DMA_BUF_IOCTL_EXPORT_SYNC_FILE (dma_buf_export_sync_file): a snapshot of the implicit fences as a new sync_file
 * fd (O_CLOEXEC), returned in arg.fd.
 *
 * Usage asymmetry: the WRITE bit asks "when may I write?" — every fence of usage ≤ READ; READ alone asks "when may
 * I read?" — usage ≤ WRITE. BOOKKEEP never. dma_resv_get_singleton picks the unsignaled ones: none → the global
 * signaled stub (status 1), one → that very fence, more → a new fence array (new context, seqno 1) of all of
 * them, NOT deduplicated (two fences of one context stay two components). Later changes to the buffer's fences
 * do not reach the exported fence (a snapshot).
 *
 * Errors in the C order: EFAULT, EINVAL (flags), EMFILE (get_unused_fd_flags comes before any fence work, so a
 * full table leaks nothing), ENOMEM (fence table full). Resv lock not needed (the unlocked iterator).
 */
function dmaBufExportSyncFile(buf: DmaBuf, arg: UserPtr, task: Task): number {
  const flags = syncFileArgFlags(arg);
  if (task.lowestFreeFd() < 0) throw new KernelError(E.EMFILE);
  const usage = dmaResvUsageRw((flags & DMA_BUF_SYNC_WRITE) !== 0);
  const out: { fence: DmaFence | null } = { fence: null };
  allocOrEnomem(() => dmaResvGetSingleton(buf.resv, usage, out));
  const fence = out.fence ?? dmaFenceGetStub();
  let fd: number;
  try {
    fd = syncFileInstall(buf.k, task, fence, true); // the sync_file takes its own reference
  } finally {
    dmaFencePut(fence);
  }
  arg.setI32(dma_buf_export_sync_file.fd, fd);
  return 0;
}

/**
 * DMA_BUF_IOCTL_IMPORT_SYNC_FILE (dma_buf_import_sync_file): adds the fence of the sync_file at arg.fd to the
 * buffer's reservation object — with WRITE usage when the WRITE bit is set (RW included), else READ. A container
 * is unwrapped (dma_fence_unwrap_for_each): each leaf is added on its own, signaled ones included, after one
 * dma_resv_reserve_fences for all of them under the resv lock.
 *
 * Errors: EFAULT, EINVAL (flags), EINVAL when arg.fd is not an open sync_file (not EBADF: sync_file_get_fence
 * just returns NULL). Reservation cannot fail with ENOMEM in the model.
 */
function dmaBufImportSyncFile(buf: DmaBuf, arg: UserPtr, task: Task): SyscallOutcome {
  const flags = syncFileArgFlags(arg);
  const fence = syncFileGetFence(buf.k, task, arg.i32(dma_buf_import_sync_file.fd));
  if (!fence) throw new KernelError(E.EINVAL);
  const usage: DmaResvUsage = flags & DMA_BUF_SYNC_WRITE ? DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ;
  let numFences = 0;
  try {
    for (const _ of dmaFenceUnwrapForEach(fence)) ++numFences;
  } catch (e) {
    dmaFencePut(fence);
    throw e;
  }
  if (numFences === 0) {
    dmaFencePut(fence);
    return 0;
  }
  // The resv lock, in syscall context: the call parks (the broker never sleeps) while a driver holds it. The
  // fence reference and a file reference are kept until the add ran or the park ended.
  buf.k.fget(buf.file);
  return dmaResvLockSyscall(
    buf.resv,
    () => {
      try {
        const r = dmaResvReserveFences(buf.resv, numFences);
        if (r) throw new KernelError(-r);
        for (const f of dmaFenceUnwrapForEach(fence)) dmaResvAddFence(buf.resv, f, usage);
      } finally {
        dmaResvUnlock(buf.resv);
      }
      return 0;
    },
    () => {
      dmaFencePut(fence);
      buf.k.fput(buf.file);
    },
  );
}
