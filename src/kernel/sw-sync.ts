/**
 * sw_sync (drivers/dma-buf/sw_sync.c, sync_debug.c): the software timeline device userspace opens to make
 * fences it signals itself — /sys/kernel/debug/sync/sw_sync (and /dev/sw_sync) — plus debugfs `sync/info`.
 *
 * Threads: broker only. A timeline and its point list are broker memory; the points are dma_fences in the shared
 * fence table, so other workers can wait on them directly, but only this driver signals them.
 *
 * ## Point lifetimes (how the kernel's release-time unlinking is modelled)
 * In the kernel, the timeline's point list and rb-tree hold no reference: timeline_fence_release() unlinks a point
 * when its last reference goes, and every point holds a reference on its timeline (which stays listed in
 * `sync/info` until its file is closed *and* its last point is released). Here a fence can be released in any
 * worker attached to the table, where no sw_sync code runs, so the unlinking is done lazily instead: the timeline
 * keeps reference-free views of its points, and whoever looks at them (create, inc, release, `sync/info`) first
 * drops the ones whose slot no longer holds a live fence (refcount > 0 and same generation). A point is only ever
 * touched through a reference taken with tryGet (dma_fence_get_rcu), so a recycled slot is never signaled by
 * mistake. The observable behaviour — list contents, duplicate reuse, timeline lifetime — is the kernel's.
 */
import { ModuleState } from './module-state.js';
import { KernelError } from '../errors.js';
import { F_TIMESTAMP, S_GEN, S_REFCOUNT } from '../fence/table.js';
import { E } from '../uapi/errno.js';
import {
  SW_SYNC_DEBUGFS_PATH,
  SW_SYNC_DEV_PATH,
  SW_SYNC_GET_DEADLINE,
  SW_SYNC_IOC_CREATE_FENCE,
  SW_SYNC_IOC_INC,
  sw_sync_create_fence_data,
  sw_sync_get_deadline,
} from '../uapi/sync-file.js';
import {
  type DmaFence,
  type DmaFenceOps,
  dmaFenceContextAlloc,
  dmaFenceDeadline,
  dmaFenceGetStatus,
  dmaFenceInit,
  dmaFenceSetSignaller,
  dmaFencePut,
  dmaFenceSetError,
  dmaFenceSignal,
  dmaFenceTimestamp,
  fenceRuntime,
} from '../fence/index.js';
import { fmodeFromFlags, type File, type FileOperations } from './file.js';
import type { Kernel } from './kernel.js';
import { allocOrEnomem, syncFileInstall, syncFileGetFence } from './sync-file.js';
import type { Task } from './task.js';
import type { UserPtr } from './uaccess.js';

const INT_MAX = 0x7fffffff;
/** sync_timeline.name is char[32]; the comm it is made from is at most 15 characters anyway. */
const TIMELINE_NAME_LEN = 32;

/**
 * struct sync_pt as the timeline lists it: a reference-free view of the point's fence and its seqno (kept here, so
 * that a slot recycled under a dead point can never disturb the list's order).
 */
interface SyncPt {
  readonly fence: DmaFence;
  readonly seqno: number;
}

/**
 * struct sync_timeline. `value` is the C `int`: it wraps as a signed 32-bit number and prints with %d.
 */
export class SyncTimeline {
  value = 0;
  /**
   * pt_list in rb-tree order: points not yet signaled by the timeline (plus, after release, the ones it errored).
   * Dead entries are dropped lazily (see the file comment).
   */
  readonly pts: SyncPt[] = [];
  /** Every point created on this timeline that may still be alive: their timeline references (kref). */
  created: DmaFence[] = [];
  /** The timeline file is open (its kref), i.e. not yet released. */
  fileOpen = true;
  /** Owner token of the task that opened the timeline (its points' annotated signaller), 0 = unknown. */
  holder = 0;
  private ptsLiveAtPrune = 0;
  private createdLiveAtPrune = 0;

  constructor(
    readonly name: string,
    readonly context: number,
    readonly ops: DmaFenceOps,
  ) {}

  /** Drops points whose fence was released (timeline_fence_release's list_del + rb_erase, done late). */
  prunePts(force: boolean): void {
    if (!force && this.pts.length <= 2 * this.ptsLiveAtPrune + 64) return;
    let j = 0;
    for (const pt of this.pts) if (fenceAlive(pt.fence)) this.pts[j++] = pt;
    this.pts.length = j;
    this.ptsLiveAtPrune = j;
  }

  /** Drops released points from `created` (their sync_timeline_put, done late). */
  pruneCreated(force: boolean): void {
    if (!force && this.created.length <= 2 * this.createdLiveAtPrune + 64) return;
    this.created = this.created.filter(fenceAlive);
    this.createdLiveAtPrune = this.created.length;
  }

  /** kref != 0: the file is open or some point is still alive. */
  referenced(): boolean {
    if (this.fileOpen) return true;
    this.pruneCreated(true);
    return this.created.length > 0;
  }
}

interface SwSyncSubsystem {
  /** sync_timeline_list_head, in creation order (what sync/info walks). */
  readonly timelines: SyncTimeline[];
  /** Timelines by fence context, for the ops' signaled hook. */
  readonly byContext: Map<number, SyncTimeline>;
  /** dma_fence_ops per timeline name (the names table is keyed by name; hooks find the timeline by context). */
  readonly opsByName: Map<string, DmaFenceOps>;
  /** Every ops object above: how dma_fence_to_sync_pt recognises a sw_sync fence (fence->ops == &timeline_fence_ops). */
  readonly allOps: Set<DmaFenceOps>;
}

const swSyncState = new ModuleState<SwSyncSubsystem>('sw_sync');

function subsys(k: Kernel): SwSyncSubsystem {
  return swSyncState.of(k);
}

/**
 * A peek (no reference taken) at whether `f` is still a live fence: refcount > 0 and the slot still holds f's
 * generation. The generation is read after the refcount: a slot is freed (generation bumped) before it can be
 * reused, so an unchanged generation means the refcount read was this fence's own.
 */
function fenceAlive(f: DmaFence): boolean {
  const i32 = f.rt.i32;
  return Atomics.load(i32, f.base + S_REFCOUNT) > 0 && Atomics.load(i32, f.base + S_GEN) === f.gen;
}

/** The low 32 bits of a seqno, as the u32 the timeline compares. */
function seqno32(f: DmaFence): number {
  return Number(f.seqno & 0xffffffffn);
}

/**
 * timeline_fence_signaled: !__dma_fence_is_later(seqno, value) for 32-bit seqnos, i.e. signaled unless
 * (int)(seqno − value) > 0. Note the half-way point: seqno − value = 2^31 counts as signaled (the C cast gives
 * INT_MIN, which is not > 0).
 */
export function ptSignaled(seqno: number, value: number): boolean {
  return !(((seqno - value) | 0) > 0);
}

/** The dma_fence_ops of timelines called `name`: driver "sw_sync", timeline name = the timeline's name. */
function opsFor(s: SwSyncSubsystem, name: string): DmaFenceOps {
  let ops = s.opsByName.get(name);
  if (!ops) {
    ops = {
      driverName: 'sw_sync',
      timelineName: name,
      // timeline_fence_signaled (runs where the ops are registered: the broker). The timeline is found by the
      // fence's context, since several timelines may share a name (and so these ops).
      signaled: (f) => {
        const tl = s.byContext.get(f.context);
        return tl !== undefined && ptSignaled(seqno32(f), tl.value);
      },
      // timeline_fence_enable_signaling returns true; set_deadline keeps the earliest deadline — which the fence
      // table already records for every fence (dmaFenceDeadline), so no hook is needed.
    };
    s.opsByName.set(name, ops);
    s.allOps.add(ops);
  }
  return ops;
}

/** dma_fence_to_sync_pt: true when `f` is a sw_sync point (of any timeline). */
function isSyncPt(k: Kernel, f: DmaFence): boolean {
  const ops = fenceRuntime().opsOf(f.nameId);
  return ops !== undefined && subsys(k).allOps.has(ops);
}

/** sync_timeline_create(name): value 0, a fresh fence context, listed in sync/info. */
function syncTimelineCreate(k: Kernel, name: string): SyncTimeline {
  const s = subsys(k);
  const n = name.slice(0, TIMELINE_NAME_LEN - 1);
  const tl = new SyncTimeline(n, dmaFenceContextAlloc(1), opsFor(s, n));
  s.timelines.push(tl);
  s.byContext.set(tl.context, tl);
  return tl;
}

/** Drops timelines nobody references any more from the debug list (sync_timeline_free, done late). */
function reapTimelines(s: SwSyncSubsystem): void {
  for (let i = s.timelines.length - 1; i >= 0; i--) {
    const tl = s.timelines[i]!;
    if (tl.referenced()) continue;
    s.timelines.splice(i, 1);
    s.byContext.delete(tl.context);
  }
}

/**
 * sync_timeline_signal(obj, inc): value += inc (wrapping int), then signals points from the head of the list while
 * they are signaled by the new value, unlinking each before it signals (its callbacks may drop the last reference).
 * Stops at the first point still pending: list order is seqno order.
 */
function syncTimelineSignal(tl: SyncTimeline, inc: number): void {
  tl.value = (tl.value + inc) | 0;
  const rt = fenceRuntime();
  const pts = tl.pts;
  let n = 0;
  while (n < pts.length) {
    const { fence: f, seqno } = pts[n]!;
    if (!fenceAlive(f)) {
      n++; // released meanwhile: its late unlink
      continue;
    }
    if (!ptSignaled(seqno, tl.value)) break;
    n++;
    const ref = rt.tryGet(f.index, f.gen);
    if (!ref) continue;
    try {
      dmaFenceSignal(ref);
    } finally {
      dmaFencePut(ref);
    }
  }
  if (n > 0) pts.splice(0, n);
}

/**
 * sync_pt_create(obj, value): a reference to the point for `value`. Already reached → a new, already signaled
 * fence (dma_fence_is_signaled_locked signals it at creation; it never enters the list). Otherwise the tree lookup:
 * a live point with the same seqno is reused (dma_fence_get_rcu); else a new point is inserted in order.
 * The ordering uses the kernel's comparison, (int)(value − other.seqno); for points spread over less than 2^31 (any
 * real use) binary search over the in-order list is the rb-tree descent.
 */
function syncPtCreate(tl: SyncTimeline, value: number): DmaFence {
  const rt = fenceRuntime();
  tl.pruneCreated(false);
  if (ptSignaled(value, tl.value)) {
    const f = allocOrEnomem(() => dmaFenceInit(tl.ops, tl.context, value));
    dmaFenceSignal(f);
    tl.created.push(f);
    return f;
  }
  tl.prunePts(false);
  const pts = tl.pts;
  for (;;) {
    let lo = 0;
    let hi = pts.length;
    let found = -1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const cmp = (value - pts[mid]!.seqno) | 0;
      if (cmp > 0) lo = mid + 1;
      else if (cmp < 0) hi = mid;
      else {
        found = mid;
        break;
      }
    }
    if (found >= 0) {
      const other = pts[found]!.fence;
      const ref = rt.tryGet(other.index, other.gen);
      if (ref) return ref;
      pts.splice(found, 1); // being released: unlink it now and look again
      continue;
    }
    const f = allocOrEnomem(() => dmaFenceInit(tl.ops, tl.context, value));
    if (tl.holder !== 0) dmaFenceSetSignaller(f, tl.holder);
    pts.splice(lo, 0, { fence: f, seqno: value });
    tl.created.push(f);
    return f;
  }
}

interface SwSyncFile {
  readonly k: Kernel;
  readonly tl: SyncTimeline;
  readonly path: string;
}

const swSyncFops: FileOperations = {
  kind: 'sw_sync',
  dname: (f) => (f.privateData as SwSyncFile).path,
  ioctl: (f, cmd, arg, ctx) => swSyncIoctl(ctx.task, (f as File<SwSyncFile>).privateData, cmd, arg),
  release: (f) => swSyncRelease((f as File<SwSyncFile>).privateData),
};

/**
 * sw_sync_debugfs_release: signals every point still on the list with -ENOENT (they stay listed, errored, until
 * released), then drops the file's timeline reference. The fences outlive the timeline file.
 */
function swSyncRelease({ k, tl }: SwSyncFile): void {
  const rt = fenceRuntime();
  for (const { fence: f } of tl.pts) {
    const ref = rt.tryGet(f.index, f.gen);
    if (!ref) continue;
    try {
      dmaFenceSetError(ref, -E.ENOENT);
      dmaFenceSignal(ref);
    } finally {
      dmaFencePut(ref);
    }
  }
  tl.fileOpen = false;
  reapTimelines(subsys(k));
}

function swSyncIoctl(task: Task, { k, tl }: SwSyncFile, cmd: number, arg: UserPtr): number {
  switch (cmd) {
    case SW_SYNC_IOC_CREATE_FENCE:
      return swSyncIoctlCreateFence(k, task, tl, arg);
    case SW_SYNC_IOC_INC:
      return swSyncIoctlInc(tl, arg);
    case SW_SYNC_GET_DEADLINE:
      return swSyncIoctlGetDeadline(k, task, arg);
    default:
      throw new KernelError(E.ENOTTY);
  }
}

/**
 * SW_SYNC_IOC_CREATE_FENCE: a sync_file (fd O_CLOEXEC, in data.fence) for the point at data.value; data.name is
 * ignored. Errors in the C order: no free fd → EMFILE; short buffer → EFAULT; fence table full → ENOMEM. The point
 * reference from sync_pt_create is dropped once the sync_file holds its own.
 */
function swSyncIoctlCreateFence(k: Kernel, task: Task, tl: SyncTimeline, arg: UserPtr): number {
  const d = sw_sync_create_fence_data;
  if (task.lowestFreeFd() < 0) throw new KernelError(E.EMFILE);
  arg.copyFrom(d.SIZE);
  const pt = syncPtCreate(tl, arg.u32(d.value));
  let fd: number;
  try {
    fd = syncFileInstall(k, task, pt, true);
  } finally {
    dmaFencePut(pt);
  }
  arg.setI32(d.fence, fd);
  return 0;
}

/** SW_SYNC_IOC_INC: a u32, unvalidated (0 is fine), applied in steps of at most INT_MAX. Short buffer → EFAULT. */
function swSyncIoctlInc(tl: SyncTimeline, arg: UserPtr): number {
  let value = arg.u32(0);
  while (value > INT_MAX) {
    syncTimelineSignal(tl, INT_MAX);
    value -= INT_MAX;
  }
  syncTimelineSignal(tl, value);
  return 0;
}

/**
 * SW_SYNC_GET_DEADLINE (Linux ≥ 6.5): the earliest deadline set on a sw_sync point's fence (by
 * SYNC_IOC_SET_DEADLINE on it or on a merge containing it). deadline_ns or pad non-zero → EINVAL; fence_fd not a
 * sync_file → EINVAL; not a sw_sync point (of any timeline) → EINVAL; no deadline set → ENOENT. The 6.5–6.12 code
 * leaks the fence reference on the "not a point" path; this one puts it.
 */
function swSyncIoctlGetDeadline(k: Kernel, task: Task, arg: UserPtr): number {
  const d = sw_sync_get_deadline;
  arg.copyFrom(d.SIZE);
  if (arg.u64big(d.deadline_ns) !== 0n || arg.u32(d.pad) !== 0) throw new KernelError(E.EINVAL);
  const fence = syncFileGetFence(k, task, arg.i32(d.fence_fd));
  if (!fence) throw new KernelError(E.EINVAL);
  let deadline: number | null;
  try {
    if (!isSyncPt(k, fence)) throw new KernelError(E.EINVAL);
    deadline = dmaFenceDeadline(fence);
  } finally {
    dmaFencePut(fence);
  }
  if (deadline === null) throw new KernelError(E.ENOENT);
  arg.setU64(d.deadline_ns, BigInt.asUintN(64, BigInt(Math.round(deadline))));
  return 0;
}

/** sync_status_str. */
function statusStr(status: number): string {
  if (status < 0) return 'error';
  if (status > 0) return 'signaled';
  return 'active';
}

/**
 * sync_print_fence(s, fence, show=false) for a sw_sync point: "  fence <status>" (dma_fence_get_status_locked,
 * which may run ops->signaled), "@<sec>.<nsec, 9 digits>" once the timestamp is set, then
 * ": <seqno %lld> / <timeline value %d>" (fence_value_str / timeline_value_str).
 */
function printPt(tl: SyncTimeline, f: DmaFence): string {
  let s = `  fence ${statusStr(dmaFenceGetStatus(f))}`;
  if (f.flags & F_TIMESTAMP) {
    const ns = BigInt(Math.round(dmaFenceTimestamp(f)));
    s += `@${ns / 1000000000n}.${(ns % 1000000000n).toString().padStart(9, '0')}`;
  }
  return `${s}: ${BigInt.asIntN(64, f.seqno)} / ${tl.value}\n`;
}

/**
 * sync_info_debugfs_show: "objs:" and a rule, then per live timeline "<name>: <value>" and its listed points, each
 * timeline followed by an empty line; then "fences:" and a rule. The sync_file list it would print next is never
 * populated by mainline's sync_file.c (sync_file_debug_add has no caller), so that section is always empty.
 */
export function syncInfoShow(k: Kernel): string {
  const s = subsys(k);
  const rt = fenceRuntime();
  reapTimelines(s);
  let out = 'objs:\n--------------\n';
  for (const tl of s.timelines) {
    tl.prunePts(true);
    out += `${tl.name}: ${tl.value}\n`;
    for (const { fence: f } of tl.pts) {
      const ref = rt.tryGet(f.index, f.gen);
      if (!ref) continue;
      try {
        out += printPt(tl, ref);
      } finally {
        dmaFencePut(ref);
      }
    }
    out += '\n';
  }
  out += 'fences:\n--------------\n';
  return out;
}

/**
 * late_initcall(sync_debugfs_init): debugfs sync/info and sync/sw_sync (also reachable as /dev/sw_sync). Opening
 * either makes a new timeline named after the opener's comm.
 */
export function swSyncInit(k: Kernel): void {
  swSyncState.init(k, { timelines: [], byContext: new Map(), opsByName: new Map(), allOps: new Set() });
  k.debugfs.set('sync/info', () => syncInfoShow(k));
  for (const path of [SW_SYNC_DEBUGFS_PATH, SW_SYNC_DEV_PATH]) {
    const ino = k.getNextIno(); // one inode per device node, shared by every open of it
    k.registerPath(path, (kk, t, p, flags) => {
      // sw_sync_debugfs_open: sync_timeline_create(get_task_comm(current)).
      const tl = syncTimelineCreate(kk, t.comm);
      // The opener holds the timeline's file and is the one expected to advance it: its points' signaller for the
      // lock watchdog (a wait on one of them is a wait for this task).
      tl.holder = t.owner;
      return kk.allocFile<SwSyncFile>(swSyncFops, { k: kk, tl, path: p }, fmodeFromFlags(flags), flags, ino);
    });
  }
}
