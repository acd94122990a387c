/**
 * The broker side of driver workers: their channels (downcalls served, upcalls posted and awaited), their
 * character devices as files of the VFS, their exported buffers as remote exporters of the dma-buf core, and
 * what a driver holds (buffer references, attachments, mappings, vmaps, pages) — released when it dies.
 *
 * Threading: broker thread only. The broker never waits for a driver: an upcall is a promise settled when the
 * driver's reply is found by the serve loop's scan (`serve`, an entry source), or rejected with ENODEV when the
 * driver dies or stops answering (the watchdog). Downcall handlers may be async (an exporter op to await); the
 * reply is written when they settle, while the calling driver serves nested upcalls in the frame above.
 *
 * Frame bookkeeping (see src/shm/driver-channel.ts): `slots[i]` mirrors frame i — an upcall posted and not yet
 * answered, a downcall being served, or a downcall answered that the driver has not consumed yet. An upcall may
 * be posted in the frame above the highest slot only when that slot is a downcall still being served (the driver
 * waits there and serves nested upcalls), or in frame 0 when no slot is in use (the driver is idle). A process's
 * file op is posted only to an idle driver (one at a time); exporter ops and move_notify may nest.
 */
import type { MessagePort } from 'node:worker_threads';
import { KernelBug, printLine, warn } from '../bug.js';
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import { O_CLOEXEC, PAGE_ALIGN, PAGE_SIZE, POLLERR, POLLHUP } from '../uapi/posix.js';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, type DmaDataDirection } from './dma-direction.js';
import { OUT_LEN, RES_LANE_DRIVER, RES_LANE_FILE, RES_LANE_SERIAL, RES_LANE_TOKEN, RFLAGS, RF_ELSEWHERE, RF_LANE, RF_PORT_MSG, SEQ } from '../shm/channel.js';
import { D_LANE_BUSY, D_LANE_SEQ, D_WANT_FRAME0 } from '../shm/driver-lane.js';
import { LaneDirectory } from './driver-lanes.js';
import {
  createDriverChannel,
  DOWN,
  DOWN_NAMES,
  DriverChannelViews,
  F_BROKER_CLAIM,
  F_DOWN_REPLY,
  F_DOWN_REQ,
  F_DRIVER_CLAIM,
  F_ERRNO,
  F_IDLE,
  F_IN_LEN,
  F_LANE,
  F_OP,
  F_OUT_LEN,
  F_PID,
  F_RFLAGS,
  F_STATE,
  F_UP_REPLY,
  F_UP_REQ,
  G_DEAD,
  H_CLAIM_WAIT,
  H_GONE,
  isFileOpUpcall,
  MAX_FRAMES,
  OPS_BIT,
  RF_WOULD_BLOCK,
  ringDriver,
  UP,
  UP_NAMES,
} from '../shm/driver-channel.js';
import { IoMem, IosysMap } from '../shm/iosys-map.js';
import { LockClass, LockDomain, Mutex } from '../locking/index.js';
import { ModuleState } from './module-state.js';
import { dmaResvFini, dmaResvFromId, dmaResvId, dmaResvUnlockDeadHolder, resvAttachment, type DmaResv } from '../fence/dma-resv.js';
import { dmaFenceIsSignaled, dmaFencePut, dmaFenceSetError, dmaFenceSignal } from '../fence/dma-fence.js';
import { fenceRuntime, fenceRuntimeAttached } from '../fence/runtime.js';
import {
  dmaBufAttachCachedMapAsync,
  dmaBufAttachNeedsCachedMap,
  dmaBufBeginCpuAccessAsync,
  dmaBufDetachAsync,
  dmaBufDetachUnmapAsync,
  dmaBufDynamicAttachAsync,
  dmaBufEndCpuAccessAsync,
  dmaBufExport,
  dmaBufFd,
  dmaBufGet,
  dmaBufList,
  dmaBufMapAttachmentAsync,
  dmaBufMapAttachmentCached,
  dmaBufMoveNotifyAsync,
  dmaBufPinAsync,
  dmaBufPut,
  dmaBufUnmapAttachmentAsync,
  dmaBufVmapAsync,
  dmaBufVmapCounted,
  dmaBufVunmapAsync,
  dmaBufVunmapCounted,
  SgTable,
  type DmaBuf,
  type DmaBufAttachment,
  type DmaBufOps,
  type RemoteDmaBufOps,
} from './dma-buf.js';
import type { SyscallEntry } from './entry.js';
import { fmodeFromFlags, type File, type FileOperations } from './file.js';
import type { Kernel } from './kernel.js';
import type { ShmRegion, Vma } from './mm.js';
import type { Task } from './task.js';
import { Blocked, blockOnPromise, WaitQueue } from './wait.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** How long a driver may take to answer one upcall before it is declared dead (Machine.boot's driverTimeoutMs). */
export const DEFAULT_DRIVER_TIMEOUT_MS = 10_000;

/** A driver's answer to an upcall, copied out of its frame. */
export interface UpReply {
  readonly ret: number;
  readonly res: Float64Array;
  readonly data: Uint8Array;
  /** A file op that would sleep: `ret` names the driver wait queue. */
  readonly wouldBlock: boolean;
}

interface Upcall {
  readonly op: number;
  readonly args: readonly number[];
  readonly data: Uint8Array | null;
  readonly pid: number;
  readonly fileOp: boolean;
  /**
   * Runs once, synchronously, when the answer is found (the serve loop's scan) or the driver dies: `err` is the
   * KernelError to fail with, else `r` is the answer. Synchronous on purpose: a parked syscall completes in the
   * same serve pass that found the reply, not in a microtask after the hot phase ends.
   */
  readonly settle: (err: unknown, r: UpReply | null) => void;
  postedAt: number;
}

/**
 * Frame i as the broker last saw it: an upcall it posted, a downcall it serves (or answered and the driver has not
 * consumed yet), or — frame 0 only — a lane op the driver is serving (F_LANE; its task is the frame's F_PID).
 */
type Slot = { readonly kind: 'up'; readonly up: Upcall } | { readonly kind: 'down'; answered: boolean } | { readonly kind: 'lane' };
const LANE_SLOT: Slot = { kind: 'lane' };

/** A driver file's broker half: the open file a process's fd points at. */
interface DriverFileState {
  readonly id: number;
  readonly drv: DriverInstance;
  readonly path: string;
  /** The driver's open succeeded (its release is due at the last put). */
  opened: boolean;
  /** Last mask the driver's poll answered. */
  mask: number;
  /** The driver wait queues its last poll answer waited on (poll_wait): only their wakes re-poll the file. */
  pollQueues: ReadonlySet<number>;
  refresh: Promise<void> | null;
  /** Pollers of this file sleep here; woken when a refreshed mask arrives. */
  readonly wq: WaitQueue;
  /**
   * Bumped whenever the file's lane grants are revoked (an fd of it removed somewhere, its release). An ioctl
   * grants a lane only when this did not move while it was in the driver: else the fd it came by may name another
   * file by now, and a grant made after that revocation would outlive it (see grantLane).
   */
  revokes: number;
}

/** One driver worker, as the kernel knows it. */
export class DriverInstance {
  dead = false;
  /** The driver worker's creator id in the fence table (0: unknown): its orphaned fences are found by it. */
  fenceCreator = 0;
  /** The driver worker's owner token (0: unknown): the reservation objects it made record it as their creator. */
  owner = 0;
  /**
   * Once dead: reservation objects it made that live dma-bufs still use (exp_info->resv), by id, with how many
   * buffers use each — finalised by the kernel when the last of them is released (the exporter cannot any more).
   */
  readonly orphanResvs = new Map<number, number>();
  /** Settles once a dead driver's holdings are released (kill()). */
  teardown: Promise<void> = Promise.resolve();
  readonly ch: DriverChannelViews;
  readonly slots: (Slot | null)[] = new Array<Slot | null>(MAX_FRAMES).fill(null);
  readonly queue: Upcall[] = [];
  readonly devices = new Set<string>();
  readonly files = new Set<DriverFileState>();
  /** dma-buf ino → the buffer and how many references this driver holds on it. */
  readonly refs = new Map<number, { readonly buf: DmaBuf; n: number }>();
  readonly exports = new Map<number, DmaBuf>();
  /** Attachments this driver made as an importer, by id. */
  readonly atts = new Map<number, DmaBufAttachment>();
  /** sg tables handed to this driver, by id. */
  readonly maps = new Map<number, { readonly att: DmaBufAttachment; readonly sgt: SgTable }>();
  /** dma-buf ino → the buffer and the vmaps this driver holds on it (a vmap holds no reference: it may outlive
   *  the driver's own, as in C). */
  readonly vmaps = new Map<number, { readonly buf: DmaBuf; n: number }>();
  readonly regions = new Map<number, { readonly region: ShmRegion; readonly trackId: number }>();
  /** Region ids whose SharedArrayBuffer this worker has been sent; buffer inos whose lock it has been sent. */
  readonly postedRegions = new Set<number>();
  readonly postedLocks = new Set<number>();
  /** Calls parked on a driver wait queue (WouldBlock), by queue id. */
  readonly waitQueues = new Map<number, WaitQueue>();
  /** Its lanes: the directory, the bell, every task's lane (src/kernel/driver-lanes.ts). */
  readonly lanes: LaneDirectory;
  /** The watchdog's view of lane ops: the D_LANE_SEQ it last saw and since when. */
  laneSeq = 0;
  laneSince = 0;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly channel: SharedArrayBuffer,
    readonly port: MessagePort,
  ) {
    this.lanes = new LaneDirectory(port);
    this.ch = new DriverChannelViews(channel, this.lanes.bell);
  }

  /** The highest frame in use, -1 when idle. */
  top(): number {
    for (let i = MAX_FRAMES - 1; i >= 0; i--) if (this.slots[i]) return i;
    return -1;
  }
}

/** The broker's messages to the main thread about drivers. */
export interface DriverDeadMessage {
  readonly kind: 'dmabuf-sim:driver-dead';
  readonly id: number;
  readonly why: string;
}

/** The driver subsystem: every driver worker, the pages they allocated, device address spaces. */
export class DriverHost {
  readonly drivers = new Map<number, DriverInstance>();
  /** Every page region a driver allocated and has not freed, by id (exporters name them in sg tables and maps). */
  readonly regions = new Map<number, ShmRegion>();
  private nextId = 1;
  private nextFileId = 1;
  private nextAttId = 1;
  private nextSgtId = 1;
  private nextVmapGen = 1;
  private readonly attIds = new WeakMap<DmaBufAttachment, number>();
  private readonly sgtIds = new WeakMap<SgTable, number>();
  /** The exporter's key for each table its map returned (passed back to its unmap). */
  private readonly exporterSgtKeys = new WeakMap<SgTable, number>();
  private readonly vmapInfo = new WeakMap<IosysMap, { region: ShmRegion; offset: number; length: number; iomem: boolean; gen: number }>();
  /** A region for a SharedArrayBuffer an in-broker exporter vmapped (heap pages), so it can be sent to a driver. */
  private readonly sabRegions = new WeakMap<SharedArrayBuffer, ShmRegion>();
  /** Per-device DMA address spaces: device name → next free address, and (device, region) → its base. */
  private readonly iovaNext = new Map<string, number>();
  private readonly iova = new Map<string, number>();
  private readonly bufLocks = new WeakMap<DmaBuf, Mutex>();
  private lockDomain: LockDomain | null = null;
  private readonly lockClass = new LockClass('&dmabuf->lock');
  private watchdog: NodeJS.Timeout | null = null;
  timeoutMs = DEFAULT_DRIVER_TIMEOUT_MS;

  constructor(
    readonly k: Kernel,
    private readonly entry: SyscallEntry,
    private readonly post: (msg: DriverDeadMessage) => void,
  ) {
    entry.sources.push(() => this.serve());
    // A task's lanes go with it (its grants first: a driver must not run a dead task's queued request).
    k.exitHooks.push((t) => {
      for (const drv of this.drivers.values()) drv.lanes.dropTask(t.pid);
    });
  }

  /** The kernel lock domain: buffer locks live in it, next to the reservation locks (drivers attach it). */
  setLockDomain(d: LockDomain): void {
    this.lockDomain = d;
  }

  // ---- lifetime ------------------------------------------------------------------------------------------------

  /** A new driver: its channel; `port` is where its SharedArrayBuffer handles go. */
  create(name: string, port: MessagePort): DriverInstance {
    const drv = new DriverInstance(this.nextId++, name, createDriverChannel(), port);
    this.drivers.set(drv.id, drv);
    if (!this.watchdog) this.watchdog = setInterval(() => this.watch(), Math.max(10, Math.min(250, this.timeoutMs / 4)));
    return drv;
  }

  /** The worker is gone (exit, crash, terminate): everything it held is released. Idempotent. */
  reap(id: number): Promise<void> {
    const drv = this.drivers.get(id);
    if (!drv) return Promise.resolve();
    const killed = this.kill(drv, 'its worker exited', false);
    this.signalOrphanedFences(drv);
    const done = killed.then(() => this.finiOrphanedResvs(drv));
    this.drivers.delete(id);
    if (this.drivers.size === 0 && this.watchdog) {
      clearInterval(this.watchdog);
      this.watchdog = null;
    }
    return done;
  }

  /**
   * The fences a dead driver created and left unsignaled (vgem's attached fences, a device's job fences) would
   * never signal: their signaller and its timers died with the worker, and every waiter — a SYNC START or poll
   * parked on a buffer's reservation, syncWait on an exported sync_file, another driver — would wait for ever. So
   * each is signaled here with -ENODEV, as a driver signals its pending fences with an error when its device goes
   * away. Runs at reap, once the worker has exited (nothing can signal them concurrently any more).
   *
   * The references the driver held on them in its own JavaScript are gone with it (see ARCHITECTURE "Not
   * covered"): fences only the dead driver referenced stay live and appear in the shutdown report.
   */
  private signalOrphanedFences(drv: DriverInstance): void {
    if (!drv.fenceCreator || !fenceRuntimeAttached()) return;
    const rt = fenceRuntime();
    for (const info of rt.table.liveFences()) {
      if (info.creator !== drv.fenceCreator || info.signaled || info.kind !== 'fence') continue;
      const f = rt.tryGet(info.index, info.gen);
      if (!f) continue;
      try {
        if (!dmaFenceIsSignaled(f)) {
          dmaFenceSetError(f, -E.ENODEV);
          dmaFenceSignal(f);
        }
      } finally {
        dmaFencePut(f);
      }
    }
  }

  /**
   * The reservation objects a dead driver made (a GEM object's resv, shared with its dma-buf as exp_info->resv) are
   * its to finalise, at its objects' release — which will never run now. Those no live dma-buf uses are finalised
   * here (their fences put); those a live dma-buf still uses are finalised when the last such buffer is released
   * (remoteOps' release). Runs at reap, after the teardown released what the driver held.
   */
  private finiOrphanedResvs(drv: DriverInstance): void {
    const att = resvAttachment();
    if (!drv.owner || !att) return;
    const users = new Map<number, number>();
    for (const buf of dmaBufList(this.k)) {
      const id = dmaResvId(buf.resv);
      users.set(id, (users.get(id) ?? 0) + 1);
    }
    for (const info of att.table.live()) {
      if (info.creator !== drv.owner) continue;
      const n = users.get(info.id) ?? 0;
      if (n > 0) drv.orphanResvs.set(info.id, n);
      else this.finiOrphan(drv, dmaResvFromId(info.id));
    }
  }

  /** dma_resv_fini of a dead driver's object — which it may have died holding (killed inside a locked section). */
  private finiOrphan(drv: DriverInstance, obj: DmaResv): void {
    dmaResvUnlockDeadHolder(obj, drv.owner);
    dmaResvFini(obj);
  }

  /** A dead driver's buffer was released: the last one using an orphaned reservation object finalises it. */
  releaseOrphanResv(drv: DriverInstance, buf: DmaBuf): void {
    const id = dmaResvId(buf.resv);
    const n = drv.orphanResvs.get(id);
    if (n === undefined) return;
    if (n > 1) drv.orphanResvs.set(id, n - 1);
    else {
      drv.orphanResvs.delete(id);
      this.finiOrphan(drv, buf.resv);
    }
  }

  stop(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  /** Declares drivers that sat on one upcall longer than timeoutMs dead. */
  private watch(): void {
    const now = performance.now();
    for (const drv of this.drivers.values()) {
      if (drv.dead) continue;
      // Only the newest frame counts: below a downcall the driver is waiting for the kernel, not silent.
      const top = drv.top();
      const s = top >= 0 ? drv.slots[top] : null;
      if (s?.kind === 'up' && now - s.up.postedAt > this.timeoutMs) {
        void this.kill(drv, `no answer to ${UP_NAMES[s.up.op]} for ${this.timeoutMs} ms`, true);
        continue;
      }
      // A lane op (a process's ioctl that came by its lane) counts the same way, unless it waits for a downcall
      // (frame 1 in use): D_LANE_SEQ moves at every op's start, so one op stuck is one sequence number seen too long.
      const dir = drv.lanes.dir;
      const seq = Atomics.load(dir, D_LANE_SEQ);
      if (Atomics.load(dir, D_LANE_BUSY) === 0 || seq !== drv.laneSeq || Atomics.load(drv.ch.frames[1]!.i32, F_STATE) !== F_IDLE) {
        drv.laneSeq = seq;
        drv.laneSince = now;
      } else if (now - drv.laneSince > this.timeoutMs) {
        void this.kill(drv, `no answer to a lane ioctl for ${this.timeoutMs} ms`, true);
      }
    }
  }

  /**
   * A driver is dead (its worker ended, or it stopped answering): its calls in flight and all later ones fail with
   * ENODEV, its device nodes go away, and everything it held is released — vmaps, mappings and attachments
   * first (they need the exporters' ops, awaited), then its buffer references. Buffers it exported stay valid
   * objects: every op into it fails, their release only frees the broker's state.
   */
  kill(drv: DriverInstance, why: string, tellMain: boolean): Promise<void> {
    if (drv.dead) return drv.teardown;
    drv.dead = true;
    Atomics.store(drv.ch.header, H_GONE, G_DEAD);
    ringDriver(drv.ch);
    drv.lanes.markDead();
    if (tellMain) {
      printLine(`dmabuf-sim: driver ${drv.name} declared dead: ${why}`);
      this.post({ kind: 'dmabuf-sim:driver-dead', id: drv.id, why });
    }
    const gone = (): KernelError => new KernelError(E.ENODEV, `driver ${drv.name} is gone`);
    for (let i = 0; i < MAX_FRAMES; i++) {
      const s = drv.slots[i];
      drv.slots[i] = null;
      if (s?.kind === 'up') s.up.settle(gone(), null);
    }
    for (const up of drv.queue.splice(0)) up.settle(gone(), null);
    for (const path of drv.devices) this.k.unregisterPath(path);
    drv.devices.clear();
    for (const q of drv.waitQueues.values()) q.wake();
    drv.waitQueues.clear();
    for (const f of drv.files) {
      f.mask = POLLERR | POLLHUP;
      f.wq.wake();
    }
    const k = this.k;
    const report = (e: unknown): void => {
      if (!(e instanceof KernelError)) this.entry.recordOops(0, `driver ${drv.name} teardown`, e);
    };
    const undo: Promise<void>[] = [];
    for (const { buf, n } of drv.vmaps.values()) {
      if (buf.file.count > 0) for (let i = 0; i < n; i++) undo.push(dmaBufVunmapAsync(k, buf, buf.vmapPtr).catch(report));
    }
    drv.vmaps.clear();
    for (const { att, sgt } of drv.maps.values()) {
      if (att.sgt !== sgt) undo.push(dmaBufUnmapAttachmentAsync(k, att, sgt, DMA_BIDIRECTIONAL).catch(report));
    }
    drv.maps.clear();
    const atts = [...drv.atts.values()];
    drv.atts.clear();
    const refs = [...drv.refs.values()];
    drv.refs.clear();
    for (const { region, trackId } of drv.regions.values()) {
      this.regions.delete(region.id);
      k.tracker.remove(trackId);
    }
    drv.regions.clear();
    // Detaches after the unmaps, puts after the detaches (a put may release the buffer, which must not have
    // attachments left).
    drv.teardown = Promise.allSettled(undo)
      .then(() => Promise.allSettled(atts.map((att) => dmaBufDetachAsync(k, att.dmabuf, att).catch(report))))
      .then(() => {
        for (const { buf, n } of refs) for (let i = 0; i < n; i++) dmaBufPut(k, buf);
      });
    return drv.teardown;
  }

  // ---- upcalls -------------------------------------------------------------------------------------------------

  /**
   * Calls into driver `drv`: resolves with its answer, rejects with its errno (KernelError) or ENODEV once it is
   * dead. `fileOp`: a process's file operation (served only when the driver is idle, one at a time).
   */
  upcall(drv: DriverInstance, op: number, args: readonly number[], data: Uint8Array | null = null, pid = 0): Promise<UpReply> {
    return new Promise<UpReply>((resolve, reject) => {
      this.upcallCb(drv, op, args, data, pid, (err, r) => {
        this.entry.turnWanted = true; // whoever awaits this runs in a microtask: let the hot phase end
        if (r) resolve(r);
        else reject(err);
      });
    });
  }

  /**
   * upcall() with a callback instead of a promise: `settle` runs synchronously when the answer is found (or the
   * driver dies) — never inside this call: a driver already dead settles in a microtask, so a caller that
   * registers what the callback wakes right after calling this (a parked syscall) cannot miss it.
   */
  upcallCb(drv: DriverInstance, op: number, args: readonly number[], data: Uint8Array | null, pid: number, settle: (err: unknown, r: UpReply | null) => void): void {
    if (drv.dead) {
      queueMicrotask(() => settle(new KernelError(E.ENODEV, `driver ${drv.name} is gone`), null));
      return;
    }
    drv.queue.push({ op, args, data, pid, fileOp: isFileOpUpcall(op), settle, postedAt: 0 });
    this.tryPost(drv);
  }

  /**
   * Posts the first queued upcall that may go now (see the file comment), if any. When one must wait for frame 0
   * and the driver holds it (a lane op, its own downcall), asks to be rung when it gives the frame back
   * (D_WANT_FRAME0): this thread may be asleep by then, and nothing else would make it look again.
   *
   * Race-free: we store the flag and then look at frame 0 again; the driver stores F_IDLE and then reads the flag
   * (DriverRuntime.releaseFrame0) — either we see the frame free and post now, or it sees the flag and rings.
   */
  private tryPost(drv: DriverInstance): void {
    if (drv.dead || drv.queue.length === 0 || this.postNext(drv)) return;
    const f0 = drv.ch.frames[0]!.i32;
    if (!driverHolds(Atomics.load(f0, F_STATE))) return;
    Atomics.store(drv.lanes.dir, D_WANT_FRAME0, 1);
    // Posted after all: the flag would only make the driver ring us and pause its lanes for nothing.
    if (!driverHolds(Atomics.load(f0, F_STATE)) && this.postNext(drv)) Atomics.store(drv.lanes.dir, D_WANT_FRAME0, 0);
  }

  /** One post into the frame the nesting allows (see tryPost); false when nothing could go. */
  private postNext(drv: DriverInstance): boolean {
    const top = drv.top();
    let n: number;
    if (top < 0) n = 0;
    else {
      const s = drv.slots[top]!;
      if (s.kind === 'lane' && top === 0 && Atomics.load(drv.ch.frames[0]!.i32, F_STATE) !== F_LANE) {
        // The lane op the scan saw has ended (its downcalls too): frame 0 is free for the next file op.
        drv.slots[0] = null;
        n = 0;
      } else {
        if (s.kind !== 'down' || s.answered || top + 1 >= MAX_FRAMES) return false;
        n = top + 1;
      }
    }
    const qi = n === 0 ? 0 : drv.queue.findIndex((u) => !u.fileOp);
    if (qi < 0) return false;
    const f = drv.ch.frames[n]!;
    // Frame 0 races an idle driver's own downcall or a lane op: the loser of this compareExchange leaves the frame
    // alone (tryPost then asks to be rung).
    if (Atomics.compareExchange(f.i32, F_STATE, F_IDLE, F_BROKER_CLAIM) !== F_IDLE) return false;
    const up = drv.queue.splice(qi, 1)[0]!;
    for (let a = 0; a < up.args.length; a++) f.args[a] = up.args[a]!;
    if (up.data) f.put(F_IN_LEN, up.data);
    else f.i32[F_IN_LEN] = 0;
    f.i32[F_OP] = up.op;
    f.i32[F_PID] = up.pid;
    up.postedAt = performance.now();
    drv.slots[n] = { kind: 'up', up };
    Atomics.store(f.i32, F_STATE, F_UP_REQ);
    ringDriver(drv.ch);
    return true;
  }

  /** The serve loop's scan of every driver channel: new downcalls, upcall replies, consumed downcall replies. */
  serve(): number {
    // Every serve pass of the broker calls this: with no driver it must cost nothing (no iterator either).
    if (this.drivers.size === 0) return 0;
    let n = 0;
    for (const drv of this.drivers.values()) {
      if (drv.dead) continue;
      for (let i = 0; i < MAX_FRAMES; i++) {
        const f = drv.ch.frames[i]!;
        let s = drv.slots[i] ?? null;
        if (s?.kind === 'lane') {
          if (Atomics.load(f.i32, F_STATE) === F_LANE) continue; // the same or the next lane op: frames above
          drv.slots[i] = s = null;
        }
        if (s?.kind === 'down' && s.answered) {
          if (Atomics.load(f.i32, F_STATE) === F_DOWN_REPLY) continue;
          drv.slots[i] = s = null; // consumed by the driver
        }
        if (s === null) {
          const state = Atomics.load(f.i32, F_STATE);
          if (state === F_LANE && i === 0) {
            drv.slots[0] = LANE_SLOT;
            continue;
          }
          if (state !== F_DOWN_REQ) {
            // A downcall the driver just consumed can sit below the upcall the broker nested above it (a put that
            // released the driver's own buffer: exp_release in frame i+1, served before the driver took its
            // reply): scan on to it, or its answer would wait for — and be lost by — the reply of frame i-1.
            if (drv.top() > i) continue;
            break;
          }
          drv.slots[i] = { kind: 'down', answered: false };
          this.dispatchDown(drv, i);
          n++;
          continue;
        }
        if (s.kind === 'up' && Atomics.load(f.i32, F_STATE) === F_UP_REPLY) {
          // Its downcalls were all answered and consumed before it could reply, and the upcalls nested in them
          // served (the driver's waitReply serves frame i+1 before it takes its own reply): the frames above are
          // free — once the answers of those nested upcalls the scan has not reached yet are taken, innermost
          // first (dropping them lost e.g. an exp_release's completion, which a close or a reap waits for).
          for (let j = MAX_FRAMES - 1; j > i; j--) {
            const above = drv.slots[j];
            drv.slots[j] = null;
            if (above?.kind !== 'up') continue;
            if (Atomics.load(drv.ch.frames[j]!.i32, F_STATE) === F_UP_REPLY) this.takeUpReply(drv, j, above.up);
            else {
              warn(`driver ${drv.name} answered ${UP_NAMES[s.up.op]} before the nested ${UP_NAMES[above.up.op]}`);
              above.up.settle(new KernelError(E.EIO, `${drv.name} ${UP_NAMES[above.up.op]} not served`), null);
            }
          }
          drv.slots[i] = null;
          n++;
          this.takeUpReply(drv, i, s.up);
          break;
        }
      }
      this.tryPost(drv);
    }
    return n;
  }

  /**
   * Takes the driver's answer to upcall `up` in frame `i` (its slot already cleared): the caller first (a parked
   * syscall is answered in this pass), then the frame goes back to the driver; an upcall the callback queues
   * meanwhile is posted by tryPost after the scan. The driver is rung only when it sleeps waiting to claim this
   * frame (H_CLAIM_WAIT: see DriverRuntime.claim for why that is race-free). A failed op's reply still carries what
   * it wrote (an ioctl's struct: copied back on failure too).
   */
  private takeUpReply(drv: DriverInstance, i: number, up: Upcall): void {
    const f = drv.ch.frames[i]!;
    const err = f.i32[F_ERRNO]!;
    const reply: UpReply = {
      ret: f.res[0]!,
      res: f.res.slice(),
      data: f.bytes(F_OUT_LEN).slice(),
      wouldBlock: (f.i32[F_RFLAGS]! & RF_WOULD_BLOCK) !== 0,
    };
    up.settle(err ? Object.assign(new KernelError(err, `${drv.name} ${UP_NAMES[up.op]}`), { reply }) : null, err ? null : reply);
    Atomics.store(f.i32, F_STATE, F_IDLE);
    if (Atomics.load(drv.ch.header, H_CLAIM_WAIT) !== 0) ringDriver(drv.ch);
  }

  /**
   * The task whose file op the driver serves in the frames below `i` (downcalls run in its context), or null. A
   * lane op's task is frame 0's F_PID (written by the driver from its directory, before its first downcall);
   * the task's current call becomes that ioctl (leak origins, oopses).
   */
  private contextOf(drv: DriverInstance, i: number): Task | null {
    for (let j = i - 1; j >= 0; j--) {
      const s = drv.slots[j];
      if (s?.kind === 'up' && s.up.pid) return this.k.tasks.get(s.up.pid) ?? null;
      if (s?.kind === 'lane') {
        const f0 = drv.ch.frames[0]!;
        const t = this.k.tasks.get(f0.i32[F_PID]!) ?? null;
        t?.beginIoctl(f0.args[1]! >>> 0);
        return t;
      }
    }
    return null;
  }

  private dispatchDown(drv: DriverInstance, i: number): void {
    const f = drv.ch.frames[i]!;
    const op = f.i32[F_OP]!;
    const args = f.args.slice();
    const input = f.bytes(F_IN_LEN).slice();
    const task = this.contextOf(drv, i);
    const k = this.k;
    const prev = k.current;
    k.current = task;
    let r: DownResult | Promise<DownResult>;
    try {
      const h = DOWNCALLS[op];
      if (!h) throw new KernelError(E.ENOSYS, `downcall ${op}`);
      r = h(this, drv, args, input, task);
    } catch (e) {
      r = Promise.reject(e);
    } finally {
      k.current = prev;
    }
    if (r instanceof Promise) {
      this.entry.turnWanted = true; // the answer comes from a microtask: let the hot phase end
      r.then(
        (v) => this.answer(drv, i, v, 0),
        (e: unknown) => this.answer(drv, i, null, this.errnoOf(drv, op, e)),
      );
    } else this.answer(drv, i, r, 0);
  }

  private errnoOf(drv: DriverInstance, op: number, e: unknown): number {
    if (e instanceof KernelError) return e.errno;
    this.entry.recordOops(0, `driver ${drv.name} ${DOWN_NAMES[op] ?? op}`, e);
    return E.EIO;
  }

  private answer(drv: DriverInstance, i: number, r: DownResult | null, err: number): void {
    const s = drv.slots[i];
    if (drv.dead || s?.kind !== 'down' || s.answered) return;
    const f = drv.ch.frames[i]!;
    f.res[0] = r?.ret ?? -1;
    if (r?.res) for (let j = 0; j < r.res.length; j++) f.res[j + 1] = r.res[j]!;
    if (r?.data) f.put(F_OUT_LEN, r.data);
    else f.i32[F_OUT_LEN] = 0;
    f.i32[F_ERRNO] = err;
    s.answered = true;
    Atomics.store(f.i32, F_STATE, F_DOWN_REPLY);
    ringDriver(drv.ch);
    this.tryPost(drv);
  }

  // ---- what drivers hold -------------------------------------------------------------------------------------------

  /** Sends the worker region `r`'s SharedArrayBuffer once (before the reply that names it). */
  postRegion(drv: DriverInstance, r: ShmRegion): void {
    if (drv.postedRegions.has(r.id) || drv.dead) return;
    drv.postedRegions.add(r.id);
    drv.port.postMessage({ id: r.id, sab: r.sab });
  }

  /** The buffer's vmap lock (dmabuf->lock: a shared Mutex), sent to the worker once. */
  postLock(drv: DriverInstance, buf: DmaBuf): void {
    if (drv.postedLocks.has(buf.ino) || drv.dead) return;
    let m = this.bufLocks.get(buf);
    if (!m) {
      m = new Mutex(this.lockClass, this.lockDomain ? { domain: this.lockDomain } : {});
      this.bufLocks.set(buf, m);
    }
    drv.postedLocks.add(buf.ino);
    drv.port.postMessage({ lock: buf.ino, handle: m.handle });
  }

  addRef(drv: DriverInstance, buf: DmaBuf): void {
    const r = drv.refs.get(buf.ino);
    if (r) r.n++;
    else drv.refs.set(buf.ino, { buf, n: 1 });
    this.postLock(drv, buf);
  }

  /** The buffer `ino` this driver holds a reference on; EINVAL otherwise (a stale or foreign handle). */
  heldBuf(drv: DriverInstance, ino: number): DmaBuf {
    const r = drv.refs.get(ino);
    if (!r) throw new KernelError(E.EINVAL, `driver ${drv.name} holds no reference on dma-buf ino ${ino}`);
    return r.buf;
  }

  /** Drops one of this driver's references from its books (the caller puts or hands it on). */
  dropRef(drv: DriverInstance, ino: number): DmaBuf {
    const r = drv.refs.get(ino);
    if (!r) throw new KernelError(E.EINVAL, `driver ${drv.name} holds no reference on dma-buf ino ${ino}`);
    if (--r.n === 0) drv.refs.delete(ino);
    return r.buf;
  }

  attId(att: DmaBufAttachment): number {
    let id = this.attIds.get(att);
    if (id === undefined) {
      id = this.nextAttId++;
      this.attIds.set(att, id);
    }
    return id;
  }

  sgtId(sgt: SgTable): number {
    let id = this.sgtIds.get(sgt);
    if (id === undefined) {
      id = this.nextSgtId++;
      this.sgtIds.set(sgt, id);
    }
    return id;
  }

  /**
   * dma_map_sgtable for the model: each device has its own DMA address space; a region gets one base address per
   * device the first time it is mapped for it (deterministic: a bump allocator per device, 2 MiB aligned).
   */
  dmaAddress(dev: string, region: ShmRegion, offset: number): number {
    const key = `${dev}\0${region.id}`;
    let base = this.iova.get(key);
    if (base === undefined) {
      base = this.iovaNext.get(dev) ?? 0x1_0000_0000;
      this.iova.set(key, base);
      this.iovaNext.set(dev, base + Math.ceil(region.size / 0x20_0000) * 0x20_0000 + 0x20_0000);
    }
    return base + offset;
  }

  /** A page region a driver allocated (an exporter names it in a map, an mmap, a vmap); EINVAL for anything else. */
  regionRange(id: number, offset: number, length: number, what: string): ShmRegion {
    const r = this.regions.get(id);
    if (!r || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > r.size) {
      warn(`${what}: the exporter named region ${id} [${offset}, +${length}), which it does not own`);
      throw new KernelError(E.EINVAL);
    }
    return r;
  }

  /** The region and range behind a vmap, for sending it to a driver (heap pages get a region of their own). */
  vmapRange(map: IosysMap): { region: ShmRegion; offset: number; length: number; iomem: boolean; gen: number } {
    let info = this.vmapInfo.get(map);
    if (info) return info;
    const v = map.vaddr;
    if (!v || !(v.buffer instanceof SharedArrayBuffer)) throw new KernelError(E.EOPNOTSUPP, 'this vmap cannot be sent to a driver');
    let region = this.sabRegions.get(v.buffer);
    if (!region) {
      region = this.k.newRegion(v.buffer, 0, v.buffer.byteLength);
      this.sabRegions.set(v.buffer, region);
    }
    info = { region, offset: v.byteOffset, length: v.byteLength, iomem: false, gen: this.nextVmapGen++ };
    this.vmapInfo.set(map, info);
    return info;
  }

  /** A remote exporter's vmap, built over the region it named. */
  makeVmap(region: ShmRegion, offset: number, length: number, iomem: boolean): IosysMap {
    const bytes = new Uint8Array(region.sab, region.byteOffset + offset, length);
    const map = iomem ? IosysMap.fromIomem(new IoMem(bytes)) : IosysMap.fromVaddr(bytes);
    this.vmapInfo.set(map, { region, offset: region.byteOffset + offset, length, iomem, gen: this.nextVmapGen++ });
    return map;
  }

  exporterSgtKey(sgt: SgTable): number {
    return this.exporterSgtKeys.get(sgt) ?? 0;
  }
  setExporterSgtKey(sgt: SgTable, key: number): void {
    this.exporterSgtKeys.set(sgt, key);
  }

  /**
   * Writes task `t`'s lane grant for file `st` into the reply of its ioctl (RF_LANE and the RES_LANE_* words; the
   * lane's memory and the driver's bell posted on the task's port with the reply's sequence number the first time).
   * Nothing when the machine records stacks (each call must come by the broker to carry its stack), the task or
   * the driver is gone, the driver's lanes or grants are all taken, or the file's grants were revoked since the
   * ioctl resolved its fd (`revokes` ≠ st.revokes: a thread sharing the table closed or replaced that fd while the
   * driver served the call — the task's cache would bind the fd to this file again, past the revocation).
   */
  grantLane(st: DriverFileState, t: Task, revokes: number): void {
    if (this.k.options.recordStacks || !this.lanesEnabled || st.drv.dead || t.state === 'dead' || !t.port) return;
    if (st.revokes !== revokes) return;
    const g = st.drv.lanes.grant(st.id, t.pid);
    if (!g) return;
    const i32 = t.channel.i32;
    if (g.newLane) {
      t.port.postMessage({ seq: i32[SEQ]!, lane: st.drv.id, sab: g.lane, bell: st.drv.lanes.bell });
      Atomics.or(i32, RFLAGS, RF_PORT_MSG);
    }
    if (g.token === 0) return;
    const res = t.channel.res;
    res[RES_LANE_DRIVER] = st.drv.id;
    res[RES_LANE_FILE] = st.id;
    res[RES_LANE_TOKEN] = g.token;
    res[RES_LANE_SERIAL] = g.serial;
    Atomics.or(i32, RFLAGS, RF_LANE);
  }

  /** Machine.boot({ driverLanes }): false keeps every driver ioctl on the broker's path (comparisons, debugging). */
  lanesEnabled = true;

  // ---- character devices -------------------------------------------------------------------------------------------

  /** register_chrdev: `path` opens a file whose ops are upcalls into `drv`. */
  registerChrdev(drv: DriverInstance, path: string): void {
    if (!path.startsWith('/dev/') || path.includes('\0') || path.endsWith('/')) throw new KernelError(E.EINVAL, `device path ${path}`);
    if (this.k.listPaths(path).includes(path)) throw new KernelError(E.EEXIST);
    this.k.registerPath(path, (k, t, _p, flags) => this.open(drv, path, k, t, flags));
    drv.devices.add(path);
  }

  unregisterChrdev(drv: DriverInstance, path: string): void {
    if (!drv.devices.delete(path)) throw new KernelError(E.EINVAL, `driver ${drv.name} has no device ${path}`);
    this.k.unregisterPath(path);
  }

  /**
   * open(2) of a driver's device: the file exists at once (one reference), the driver's open answers later; the
   * call installs the fd then. An open that fails drops the file without the driver's release; one whose process
   * died meanwhile is released (with the driver's release when its open had succeeded).
   */
  private open(drv: DriverInstance, path: string, k: Kernel, t: Task, flags: number): Blocked {
    if (drv.dead) throw new KernelError(E.ENODEV);
    const st: DriverFileState = { id: this.nextFileId++, drv, path, opened: false, mask: 0, pollQueues: new Set(), refresh: null, wq: new WaitQueue(), revokes: 0 };
    const f = k.allocFile<DriverFileState>(driverFops, st, fmodeFromFlags(flags), flags);
    drv.files.add(st);
    const p = this.upcall(drv, UP.open, [st.id, flags], enc.encode(path), t.pid);
    return blockOnPromise(
      p.catch((e: unknown) => {
        k.fput(f);
        throw e;
      }),
      () => {
        st.opened = true;
        try {
          return k.installFd(t, f, (flags & O_CLOEXEC) !== 0);
        } catch (e) {
          k.fput(f);
          throw e;
        }
      },
      (v) => {
        if (v === undefined) return; // failed: the file is already dropped
        st.opened = true;
        k.fput(f);
      },
    );
  }

  /**
   * A file op as a parked call: the upcall, then `then` with its answer in the task's context. A "would block on
   * queue Q" answer parks the call on Q (the driver's wake_up retries the op).
   */
  fileOpCall(
    st: DriverFileState,
    op: number,
    args: readonly number[],
    data: Uint8Array | null,
    t: Task,
    then: (r: UpReply) => number,
    onError?: (r: UpReply) => void,
  ): Blocked {
    const drv = st.drv;
    const q = new WaitQueue();
    let outcome: { ok: true; r: UpReply } | { ok: false; err: unknown } | null = null;
    let gone = false;
    let sub: { q: WaitQueue; w: () => void } | null = null;
    // The process may stop spinning: its answer needs the driver's worker first (see RF_ELSEWHERE).
    Atomics.or(t.channel.i32, RFLAGS, RF_ELSEWHERE);
    const start = (): void => {
      // The callback form: the answer completes the parked call in the serve pass that found it.
      this.upcallCb(drv, op, args, data, t.pid, (err, r) => {
        if (!r) {
          outcome = { ok: false, err };
          if (!gone) q.wake();
          return;
        }
        if (gone) return;
        if (r.wouldBlock) {
          const wq = this.driverQueue(drv, r.ret);
          const w = (): void => {
            wq.remove(w);
            sub = null;
            start();
          };
          sub = { q: wq, w };
          wq.add(w);
          return;
        }
        outcome = { ok: true, r };
        q.wake();
      });
    };
    start();
    return new Blocked(
      () => {
        const o = outcome as { ok: true; r: UpReply } | { ok: false; err: unknown } | null;
        if (!o) return undefined;
        if (!o.ok) {
          const reply = (o.err as { reply?: UpReply } | null)?.reply;
          if (reply && onError) onError(reply);
          throw o.err;
        }
        return then(o.r);
      },
      [q],
      -1,
      () => 0,
      () => {
        gone = true;
        const s = sub as { q: WaitQueue; w: () => void } | null;
        if (s) s.q.remove(s.w);
      },
    );
  }

  /** The broker-side queue standing for driver wait queue `id` (a dead driver's calls are woken to fail). */
  driverQueue(drv: DriverInstance, id: number): WaitQueue {
    if (drv.dead) {
      const q = new WaitQueue();
      queueMicrotask(() => q.wake());
      return q;
    }
    let q = drv.waitQueues.get(id);
    if (!q) {
      q = new WaitQueue();
      drv.waitQueues.set(id, q);
    }
    return q;
  }

  /** wake_up from a driver: parked calls on the queue retry; pollers of its files get a fresh mask. */
  wakeUp(drv: DriverInstance, id: number): void {
    const q = drv.waitQueues.get(id);
    if (q) {
      drv.waitQueues.delete(id);
      this.k.defer(() => q.wake());
    }
    // Only the files whose last poll waited on this queue (poll_wait's entries): a wake of another queue leaves them.
    for (const f of drv.files) if (f.wq.size > 0 && f.pollQueues.has(id)) void this.refreshPoll(f);
  }

  /** An oops a driver reported (an uncaught exception in its op): recorded as a syscall's would be. */
  recordDriverOops(pid: number, call: string, e: unknown): void {
    this.entry.recordOops(pid, call, e);
  }

  /** Asks the driver's poll for the file's mask; pollers are woken with the answer. */
  refreshPoll(st: DriverFileState): Promise<void> {
    if (st.refresh) return st.refresh;
    const p = this.upcall(st.drv, UP.poll, [st.id, -1]).then(
      (r) => {
        st.mask = r.ret;
        st.pollQueues = new Set(JSON.parse(dec.decode(r.data)) as number[]);
      },
      () => {
        st.mask = POLLERR | POLLHUP;
      },
    );
    st.refresh = p.then(() => {
      st.refresh = null;
      st.wq.wake();
    });
    return st.refresh;
  }
}

/** What a downcall handler returns: RES[0], RES[1..], reply DATA. */
interface DownResult {
  readonly ret: number;
  readonly res?: readonly number[];
  readonly data?: Uint8Array;
}

type DownHandler = (h: DriverHost, drv: DriverInstance, a: Float64Array, input: Uint8Array, task: Task | null) => DownResult | Promise<DownResult>;

const OK: DownResult = { ret: 0 };

/** A direction argument: the three valid ones, EINVAL (with valid_dma_direction's WARN) otherwise. */
function dirArg(v: number): DmaDataDirection {
  if (v !== DMA_BIDIRECTIONAL && v !== DMA_TO_DEVICE && v !== DMA_FROM_DEVICE) {
    warn(`dma-buf: WARN_ON(!valid_dma_direction(${v}))`);
    throw new KernelError(E.EINVAL);
  }
  return v;
}

function intArg(v: number, what: string): number {
  if (!Number.isSafeInteger(v)) throw new KernelError(E.EINVAL, `${what} ${v}`);
  return v;
}

/**
 * The exporter ops of a buffer `drv` exported: upcalls into it, in the context of the task whose call triggered
 * them (a process's mmap or SYNC, the call a driver's downcall serves; none for the kernel's own), as an exporter
 * op runs in the caller's context in Linux: its WARNs and oopses name that task.
 */
function remoteOps(h: DriverHost, drv: DriverInstance, bits: number): RemoteDmaBufOps {
  const up = (op: number, args: readonly number[], data: Uint8Array | null = null): Promise<UpReply> =>
    h.upcall(drv, op, args, data, h.k.current?.pid ?? 0);
  return {
    has: {
      attach: (bits & OPS_BIT.attach) !== 0,
      detach: (bits & OPS_BIT.detach) !== 0,
      pin: (bits & OPS_BIT.pin) !== 0,
      unpin: (bits & OPS_BIT.unpin) !== 0,
      beginCpuAccess: (bits & OPS_BIT.beginCpuAccess) !== 0,
      endCpuAccess: (bits & OPS_BIT.endCpuAccess) !== 0,
      mmap: (bits & OPS_BIT.mmap) !== 0,
      vmap: (bits & OPS_BIT.vmap) !== 0,
      vunmap: (bits & OPS_BIT.vunmap) !== 0,
    },
    attach: async (buf, att) => {
      await up(UP.exp_attach, [buf.ino, h.attId(att), att.importerOps ? 1 : 0, att.peer2peer ? 1 : 0], enc.encode(att.dev.name));
    },
    detach: async (buf, att) => void (await up(UP.exp_detach, [buf.ino, h.attId(att)])),
    pin: async (att) => void (await up(UP.exp_pin, [att.dmabuf.ino, h.attId(att)])),
    unpin: async (att) => void (await up(UP.exp_unpin, [att.dmabuf.ino, h.attId(att)])),
    mapDmaBuf: async (att, dir) => {
      const r = await up(UP.exp_map, [att.dmabuf.ino, h.attId(att), dir]);
      const ents = JSON.parse(dec.decode(r.data)) as [number, number, number][];
      const sgt = new SgTable(
        ents.map(([id, offset, length]) => {
          if (offset % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) {
            warn(`map_dma_buf of ${drv.name}: a range that is not page-aligned (${offset}, +${length})`);
            throw new KernelError(E.EINVAL);
          }
          return { region: h.regionRange(id, offset, length, `map_dma_buf of ${drv.name}`), offset, length };
        }),
      );
      h.setExporterSgtKey(sgt, r.ret);
      return sgt;
    },
    unmapDmaBuf: async (att, sgt, dir) => void (await up(UP.exp_unmap, [att.dmabuf.ino, h.attId(att), h.exporterSgtKey(sgt), dir])),
    release: (buf) => {
      drv.exports.delete(buf.ino);
      // Completes in the exporter's worker: the put's caller waits for it (Kernel.asyncRelease).
      if (!drv.dead) h.k.asyncRelease(up(UP.exp_release, [buf.ino]));
      else h.releaseOrphanResv(drv, buf);
    },
    beginCpuAccess: async (buf, dir) => void (await up(UP.exp_begin_cpu_access, [buf.ino, dir])),
    endCpuAccess: async (buf, dir) => void (await up(UP.exp_end_cpu_access, [buf.ino, dir])),
    mmap: async (buf, vma: Vma) => {
      const r = await up(UP.exp_mmap, [buf.ino, vma.pgoff, vma.length, vma.prot, vma.flags]);
      vma.region = h.regionRange(r.res[0]!, r.res[1]!, vma.length, `mmap of ${drv.name}`);
      vma.regionOffset = r.res[1]!;
    },
    vmap: async (buf) => {
      const r = await up(UP.exp_vmap, [buf.ino]);
      const [id, offset, length, iomem] = [r.res[0]!, r.res[1]!, r.res[2]!, r.res[3]!];
      return h.makeVmap(h.regionRange(id, offset, length, `vmap of ${drv.name}`), offset, length, iomem !== 0);
    },
    vunmap: async (buf) => void (await up(UP.exp_vunmap, [buf.ino])),
  };
}

/** Downcalls by number: the kernel API of src/driver/, each in its broker half. */
const DOWNCALLS: (DownHandler | undefined)[] = [];
const on = (op: number, fn: DownHandler): void => {
  DOWNCALLS[op] = fn;
};

on(DOWN.nop, () => OK);
on(DOWN.register_chrdev, (h, drv, _a, input) => {
  h.registerChrdev(drv, dec.decode(input));
  return OK;
});
on(DOWN.unregister_chrdev, (h, drv, _a, input) => {
  h.unregisterChrdev(drv, dec.decode(input));
  return OK;
});
on(DOWN.alloc_pages, (h, drv, a) => {
  const size = intArg(a[0]!, 'alloc_pages size');
  if (size <= 0) throw new KernelError(E.EINVAL);
  if (size > 2 ** 31) throw new KernelError(E.ENOMEM);
  let sab: SharedArrayBuffer;
  try {
    sab = new SharedArrayBuffer(PAGE_ALIGN(size));
  } catch {
    throw new KernelError(E.ENOMEM);
  }
  const region = h.k.newRegion(sab, 0, sab.byteLength);
  const trackId = h.k.tracker.add('driver_pages', { pid: 0, comm: drv.name, call: 'alloc_pages', seq: region.id }, () => `${region.size} bytes of pages (region ${region.id}) of driver ${drv.name}`);
  drv.regions.set(region.id, { region, trackId });
  h.regions.set(region.id, region);
  h.postRegion(drv, region);
  return { ret: region.id };
});
on(DOWN.free_pages, (h, drv, a) => {
  const r = drv.regions.get(a[0]!);
  if (!r) throw new KernelError(E.EINVAL);
  drv.regions.delete(r.region.id);
  h.regions.delete(r.region.id);
  h.k.tracker.remove(r.trackId);
  return OK;
});
on(DOWN.export, (h, drv, a, input) => {
  const size = intArg(a[0]!, 'size');
  if (size < 0) throw new KernelError(E.EINVAL);
  const bits = a[2]! | 0;
  const remote = remoteOps(h, drv, bits);
  const buf = dmaBufExport(h.k, {
    ops: {} as DmaBufOps,
    size,
    flags: a[1]! | 0,
    priv: a[3] ? drv : null,
    expName: dec.decode(input),
    // exp_info->resv: a reservation object of the machine's table the driver made (by id, + 1; 0 for none).
    ...(a[4] ? { resv: dmaResvFromId(a[4] - 1) } : {}),
    owner: drv.name,
    remote: {
      ops: remote,
      cacheSgtMapping: (bits & OPS_BIT.cacheSgtMapping) !== 0,
      map: (bits & OPS_BIT.map) !== 0,
      unmap: (bits & OPS_BIT.unmap) !== 0,
      release: (bits & OPS_BIT.release) !== 0,
    },
  });
  drv.exports.set(buf.ino, buf);
  h.addRef(drv, buf);
  return { ret: buf.ino, res: [0, dmaResvId(buf.resv) + 1] };
});
on(DOWN.fd, (h, drv, a, _i, task) => {
  const buf = h.heldBuf(drv, a[0]!);
  if (!task) throw new KernelError(E.EINVAL, 'dma_buf_fd outside a process context');
  if (task.state === 'dead') throw new KernelError(E.ESRCH);
  const fd = dmaBufFd(h.k, task, buf, a[1]! | 0);
  h.dropRef(drv, buf.ino); // consumed: the fd holds it now
  return { ret: fd };
});
on(DOWN.get, (h, drv, a, _i, task) => {
  if (!task || task.state === 'dead') throw new KernelError(E.EBADF, 'dma_buf_get outside a process context');
  const buf = dmaBufGet(h.k, task, a[0]! | 0);
  h.addRef(drv, buf);
  return { ret: buf.ino, res: [buf.size, dmaResvId(buf.resv) + 1], data: enc.encode(buf.expName) };
});
on(DOWN.get_dma_buf, (h, drv, a) => {
  const buf = h.heldBuf(drv, a[0]!);
  h.k.fget(buf.file);
  h.addRef(drv, buf);
  return OK;
});
on(DOWN.put, (h, drv, a) => {
  const buf = h.heldBuf(drv, a[0]!);
  if (buf.file.count === 1 && buf.vmappingCounter > 0) {
    // dma_buf_release's BUG_ON(dmabuf->vmapping_counter): reported, and the put refused (the driver keeps its
    // reference, so nothing is left half-released; its teardown vunmaps and puts).
    warn(`driver ${drv.name}: BUG: dma_buf_put: the last reference of dma-buf ino ${buf.ino} while it is vmapped (${buf.vmappingCounter})`);
    throw new KernelError(E.EINVAL);
  }
  h.dropRef(drv, buf.ino);
  dmaBufPut(h.k, buf);
  return OK;
});
on(DOWN.attach, async (h, drv, a, input) => {
  const buf = h.heldBuf(drv, a[0]!);
  const dev = { name: dec.decode(input) };
  const importerOps = a[1]
    ? {
        allowPeer2peer: a[2] === 1,
        moveNotify: (att: DmaBufAttachment): Promise<void> => h.upcall(drv, UP.imp_move_notify, [h.attId(att)]).then(() => {}, () => {}),
      }
    : null;
  // The cached mapping of a static/dynamic mismatch is made by a second downcall (attach_map), under the
  // reservation lock the driver takes in its own worker between the two (dma_buf_dynamic_attach's locking).
  const att = await dmaBufDynamicAttachAsync(h.k, buf, dev, importerOps, drv, true);
  if (drv.dead) {
    await dmaBufDetachAsync(h.k, buf, att).catch(() => {});
    throw new KernelError(E.ENODEV);
  }
  const id = h.attId(att);
  drv.atts.set(id, att);
  return { ret: id, res: [dmaBufAttachNeedsCachedMap(att) ? 1 : 0] };
});
on(DOWN.attach_map, async (_h, drv, a) => {
  const att = drv.atts.get(a[0]!);
  if (!att) throw new KernelError(E.EINVAL);
  if (att.sgt || !dmaBufAttachNeedsCachedMap(att)) return OK;
  // On failure the driver detaches (after unlocking, as dma_buf_dynamic_attach's error path).
  await dmaBufAttachCachedMapAsync(att);
  return OK;
});
on(DOWN.detach_unmap, async (_h, drv, a) => {
  const att = drv.atts.get(a[0]!);
  if (!att) return OK; // the detach downcall that follows reports it
  for (const [sid, m] of drv.maps) if (m.sgt === att.sgt) drv.maps.delete(sid);
  try {
    await dmaBufDetachUnmapAsync(att);
  } catch (e) {
    if (!(e instanceof KernelError && e.errno === E.ENODEV)) throw e;
  }
  return OK;
});
on(DOWN.report, (h, drv, a, input, task) => {
  const text = `driver ${drv.name}: ${dec.decode(input)}`;
  if (a[0] === 1) {
    // A BUG (an uncaught exception in one of its ops): an oops in the kernel's record, as a process's would be.
    const bug = new KernelBug(text);
    h.recordDriverOops(task?.pid ?? 0, `driver ${drv.name}`, bug);
  } else if (a[1] === 1) h.k.recordWarning(text, true); // expected by the driver's own expectWarnings()
  else warn(text); // the kernel's expectations (expectKernelWarnings) apply, as to its own warnings
  return OK;
});
on(DOWN.detach, async (h, drv, a) => {
  const id = a[0]!;
  const att = drv.atts.get(id);
  if (!att) throw new KernelError(E.EINVAL);
  drv.atts.delete(id);
  for (const [sid, m] of drv.maps) if (m.att === att) drv.maps.delete(sid);
  try {
    await dmaBufDetachAsync(h.k, att.dmabuf, att);
  } catch (e) {
    // A dead exporter cannot answer: the attachment is gone from the core all the same.
    if (!(e instanceof KernelError && e.errno === E.ENODEV)) throw e;
  }
  return OK;
});
on(DOWN.map, (h, drv, a) => {
  const att = drv.atts.get(a[0]!);
  if (!att) throw new KernelError(E.EINVAL);
  const dir = dirArg(a[1]!);
  // The cached table needs no exporter: answered in this serve pass (no await, no event-loop turn).
  const cached = dmaBufMapAttachmentCached(att, dir);
  if (cached) return mapReply(h, drv, att, cached);
  return (async () => {
    const sgt = await dmaBufMapAttachmentAsync(h.k, att, dir);
    if (drv.dead) {
      await dmaBufUnmapAttachmentAsync(h.k, att, sgt, dir).catch(() => {});
      throw new KernelError(E.ENODEV);
    }
    return mapReply(h, drv, att, sgt);
  })();
});
/** The map downcall's answer: the table's id (remembered for unmap and the driver's death) and its entries. */
function mapReply(h: DriverHost, drv: DriverInstance, att: DmaBufAttachment, sgt: SgTable): DownResult {
  const id = h.sgtId(sgt);
  drv.maps.set(id, { att, sgt });
  for (const s of sgt.sgl) h.postRegion(drv, s.region);
  const ents = sgt.sgl.map((s) => [s.region.id, s.offset, s.length, h.dmaAddress(att.dev.name, s.region, s.offset)]);
  // RES[1]: the core cached this table for the attachment (detach unmaps it, under the reservation lock).
  return { ret: id, res: [att.sgt === sgt ? 1 : 0], data: enc.encode(JSON.stringify(ents)) };
}
on(DOWN.unmap, (h, drv, a) => {
  const att = drv.atts.get(a[0]!);
  const m = drv.maps.get(a[1]!);
  if (!att || !m || m.att !== att) {
    // A table this attachment never got (or already unmapped): the C code would hand the exporter a stale
    // pointer; the model warns and does nothing.
    warn(`dma_buf_unmap_attachment: sg_table ${a[1]} was never mapped for attachment ${a[0]} (or is unmapped already)`);
    return { ret: 2 };
  }
  const dir = dirArg(a[2]!);
  if (att.sgt === m.sgt) return { ret: 0 }; // the cached table: a no-op, it stays until detach
  drv.maps.delete(a[1]!);
  return dmaBufUnmapAttachmentAsync(h.k, att, m.sgt, dir).then(() => ({ ret: 1 }));
});
on(DOWN.begin_cpu_access, async (h, drv, a) => {
  await dmaBufBeginCpuAccessAsync(h.k, h.heldBuf(drv, a[0]!), dirArg(a[1]!));
  return OK;
});
on(DOWN.end_cpu_access, async (h, drv, a) => {
  await dmaBufEndCpuAccessAsync(h.k, h.heldBuf(drv, a[0]!), dirArg(a[1]!));
  return OK;
});
on(DOWN.vmap, (h, drv, a) => {
  const buf = h.heldBuf(drv, a[0]!);
  // Counted already: the same mapping, no exporter call — answered in this serve pass.
  const counted = dmaBufVmapCounted(buf);
  if (counted) return vmapReply(h, drv, buf, counted);
  return (async () => {
    const map = await dmaBufVmapAsync(h.k, buf);
    if (drv.dead) {
      await dmaBufVunmapAsync(h.k, buf, map).catch(() => {});
      throw new KernelError(E.ENODEV);
    }
    return vmapReply(h, drv, buf, map);
  })();
});
/** The vmap downcall's answer (the region, offset, length, I/O-memory flag and generation); counted per driver. */
function vmapReply(h: DriverHost, drv: DriverInstance, buf: DmaBuf, map: IosysMap): DownResult | Promise<DownResult> {
  let v;
  try {
    v = h.vmapRange(map);
  } catch (e) {
    return dmaBufVunmapAsync(h.k, buf, map).then(() => {
      throw e;
    });
  }
  const held = drv.vmaps.get(buf.ino);
  if (held) held.n++;
  else drv.vmaps.set(buf.ino, { buf, n: 1 });
  h.postRegion(drv, v.region);
  return { ret: v.region.id, res: [v.offset, v.length, v.iomem ? 1 : 0, v.gen] };
}
on(DOWN.vunmap, (h, drv, a) => {
  // The buffer of one of this driver's vmaps, or one it holds a reference on (dma_buf_vunmap takes none).
  const held = drv.vmaps.get(a[0]!);
  const buf = held?.buf ?? h.heldBuf(drv, a[0]!);
  const cur = buf.vmapPtr.isNull ? -2 : h.vmapRange(buf.vmapPtr).gen;
  // The caller's map is the core's current one when the generations agree; anything else is "a different
  // mapping" (or none), which the core reports as the BUG it is.
  const map = a[1] === cur ? buf.vmapPtr : IosysMap.fromVaddr(new Uint8Array(0));
  const done = (): DownResult => {
    if (held && --held.n === 0) drv.vmaps.delete(buf.ino);
    return { ret: buf.vmappingCounter === 0 ? 0 : 1 };
  };
  // One of several counted vmaps: no exporter call — answered in this serve pass.
  if (dmaBufVunmapCounted(buf, map)) return done();
  return dmaBufVunmapAsync(h.k, buf, map).then(done, (e: unknown) => {
    if (e instanceof KernelBug) {
      // Reported (in the kernel's warnings, so a test can expect it) and refused: the count is unchanged.
      warn(`driver ${drv.name}: ${e.message}`);
      throw new KernelError(E.EINVAL, e.message);
    }
    throw e;
  });
});
on(DOWN.pin, async (h, drv, a) => {
  const att = drv.atts.get(a[0]!);
  if (!att) throw new KernelError(E.EINVAL);
  await dmaBufPinAsync(h.k, att, true);
  return OK;
});
on(DOWN.unpin, async (h, drv, a) => {
  const att = drv.atts.get(a[0]!);
  if (!att) throw new KernelError(E.EINVAL);
  await dmaBufPinAsync(h.k, att, false);
  return OK;
});
on(DOWN.move_notify, async (h, drv, a) => {
  const buf = drv.exports.get(a[0]!);
  if (!buf) throw new KernelError(E.EINVAL, 'dma_buf_move_notify of a buffer this driver did not export');
  await dmaBufMoveNotifyAsync(h.k, buf);
  return OK;
});
on(DOWN.wake_up, (h, drv, a) => {
  h.wakeUp(drv, a[0]!);
  return OK;
});

// ---- the file operations of a driver's device ------------------------------------------------------------------------

/** Frame 0 states in which the driver, not the broker, holds the frame (its downcall, a lane op). */
function driverHolds(state: number): boolean {
  return state === F_LANE || state === F_DRIVER_CLAIM || state === F_DOWN_REQ || state === F_DOWN_REPLY;
}

const hostOf = new WeakMap<DriverInstance, DriverHost>();
const stOf = (f: File): DriverFileState => f.privateData as DriverFileState;
const host = (st: DriverFileState): DriverHost => hostOf.get(st.drv)!;

/** Broker-side file ops of every driver device: each one an upcall into the driver worker. */
export const driverFops: FileOperations = {
  kind: 'chrdev',
  dname: (f) => stOf(f).path,
  ioctl(f, cmd, arg, ctx) {
    const st = stOf(f);
    const bytes = arg.bytes ? arg.bytes.slice() : null;
    const t = ctx.task;
    // copy_to_user of what the driver left in the argument (the ioctl syscall sent the whole struct back) —
    // after a failure too, when the driver sent it (drm_ioctl copies kdata out before returning the error).
    // And the task's lane grant for this file rides on the reply (its next ioctls on it go straight to the driver).
    const h = host(st);
    const revokes = st.revokes;
    const copyOut = (r: UpReply): void => {
      if (bytes && r.data.length > 0) t.channel.data.set(r.data.subarray(0, bytes.length));
      h.grantLane(st, t, revokes);
    };
    return h.fileOpCall(
      st,
      UP.ioctl,
      [st.id, cmd, bytes ? 1 : 0, arg.value],
      bytes,
      t,
      (r) => {
        copyOut(r);
        return r.ret;
      },
      copyOut,
    );
  },
  mmap(f, vma) {
    const st = stOf(f);
    const h = host(st);
    return h.upcall(st.drv, UP.mmap, [st.id, vma.pgoff, vma.length, vma.prot, vma.flags], null, h.k.current?.pid ?? 0).then((r) => {
      vma.region = h.regionRange(r.res[0]!, r.res[1]!, vma.length, `mmap of ${st.drv.name}`);
      vma.regionOffset = r.res[1]!;
    });
  },
  poll(f, pt) {
    const st = stOf(f);
    pt?.wait(st.wq);
    return st.mask;
  },
  pollPrepare(f) {
    const st = stOf(f);
    return host(st).refreshPoll(st);
  },
  read(f, count, ctx) {
    const st = stOf(f);
    const t = ctx.task;
    return host(st).fileOpCall(st, UP.read, [st.id, count], null, t, (r) => {
      const n = Math.min(r.data.length, count);
      t.channel.data.set(r.data.subarray(0, n));
      t.channel.i32[OUT_LEN] = n;
      return n;
    });
  },
  flush(f, files) {
    // An fd of it left `files`: the tasks using that table resolve their fds afresh before their next lane ioctl
    // (driver-lanes.ts). Tasks of other tables keep theirs — their fds did not change.
    const st = stOf(f);
    st.revokes++;
    if (!st.drv.lanes.hasGrants(st.id)) return;
    const tasks = host(st).k.tasks;
    st.drv.lanes.revokeFile(st.id, (pid) => tasks.get(pid)?.files === files);
  },
  release(f) {
    const st = stOf(f);
    st.revokes++;
    st.drv.lanes.revokeFile(st.id);
    st.drv.files.delete(st);
    // The driver's release runs in its worker: the last put's caller (close, dup2, exit) waits for it
    // (Kernel.asyncRelease).
    if (st.opened && !st.drv.dead) {
      const h = host(st);
      h.k.asyncRelease(h.upcall(st.drv, UP.release, [st.id]));
    }
  },
};

const driverHostState = new ModuleState<DriverHost>('driver-host');

/** Boots the driver subsystem: `post` sends the main thread word of a driver the broker declared dead. */
export function driverHostInit(k: Kernel, entry: SyscallEntry, post: (msg: DriverDeadMessage) => void, timeoutMs?: number): DriverHost {
  const h = new DriverHost(k, entry, post);
  if (timeoutMs !== undefined) h.timeoutMs = timeoutMs;
  driverHostState.init(k, h);
  return h;
}

export function driverHostOf(k: Kernel): DriverHost {
  return driverHostState.of(k);
}

/** Creates a driver and remembers its host (the file ops reach it through the instance). */
export function createDriver(h: DriverHost, name: string, port: MessagePort): DriverInstance {
  const drv = h.create(name, port);
  hostOf.set(drv, h);
  return drv;
}
