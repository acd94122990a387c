/**
 * The kernel's control plane: what the main thread (Machine) asks of the broker over comlink — boot, process
 * creation and reaping, fds installed from outside (socketpairs for tests), debugfs reads, stats and the
 * shutdown report. Runs on the broker thread, between hot-loop slices.
 */
import type { MessagePort } from 'node:worker_threads';
import { KernelBug, warn } from '../bug.js';
import { KernelError, simError, SyscallError } from '../errors.js';
import { E } from '../uapi/errno.js';
import { AF_UNIX, O_CLOEXEC, O_LARGEFILE, O_RDWR, SOCK_TYPE_MASK } from '../uapi/posix.js';
import { createChannel, SHUTDOWN, SHUTDOWN_BEGUN, SYS } from '../shm/channel.js';
import { createControl, spinBlockOf } from '../shm/control-block.js';
import { releaseSpinSlots, SB_MAX, spinSlotsInUse } from '../shm/spin.js';
import { TOKEN_UNTRACKED } from '../shm/alive.js';
import { createSplitFenceTable, K_KERNEL_OWNER } from '../fence/table.js';
import type { FenceRuntime } from '../fence/runtime.js';
import { afUnixOf, socketpairFlags } from './af-unix.js';
import { registerCharDevices } from './chrdev.js';
import { attachFenceTable, dmaFenceFromHandle, liveFences, type FenceHandle, type FenceTableOptions } from '../fence/index.js';
import { fenceTableSizes } from '../fence/table.js';
import { ServeLoop, SyscallEntry, type Oops } from './entry.js';
import { registerFsSyscalls } from './fs.js';
import { cloneTask, notifyParent, registerForkSyscalls, type CloneSpec, type SpawnRequest } from './fork.js';
import {
  dmaBufAttach,
  dmaBufBeginCpuAccessAsync,
  dmaBufDetach,
  dmaBufEndCpuAccess,
  dmaBufGet,
  dmaBufList,
  dmaBufMapAttachmentAsync,
  dmaBufPut,
  dmaBufUnmapAttachment,
  dmaBufSnapshot,
  type DmaBufSnapshot,
} from './dma-buf.js';
import { attachResvTable, dmaResvAddFence, dmaResvLockAsync, dmaResvReserveFences, dmaResvUnlock, type DmaResvUsage } from '../fence/dma-resv.js';
import { createResvTable, liveResvs, resvTableSizes, type ResvTableOptions } from '../fence/resv-table.js';
import { LockDomain } from '../locking/domain.js';
import type { LockdepReport } from '../locking/lockdep.js';
import { dmaHeapList, type DmaHeapInfo } from './dma-heap.js';
import { Kernel, THREADS_MAX_LIMIT, type KernelWarning } from './kernel.js';
import type { HeldReport, LeakReport } from './leaks.js';
import { registerMmSyscalls } from './mm.js';
import { registerPollSyscall } from './select.js';
import { findKunitCase, runKunitCase, type KunitResult } from './kunit.js';
import { DMA_TO_DEVICE, type DmaDataDirection } from './dma-direction.js';
import { Task } from './task.js';
import { createDriver, DEFAULT_DRIVER_TIMEOUT_MS, driverHostInit, type DriverDeadMessage, type DriverHost } from './driver-host.js';
import type { File } from './file.js';
import { beginExpectWarnings, endExpectWarnings, setWarningSink, type WarningExpectation } from '../bug.js';
import { bootSubsystems, type SubsystemConfig } from './subsystems.js';

export interface BootConfig extends SubsystemConfig {
  /** Processes that may spin for a reply at once (default: vCPUs − 1, at least 1). */
  readonly maxSpinners: number;
  readonly recordStacks?: boolean;
  /** Fence table sizes (validated again here: the broker trusts no caller). */
  readonly fences?: FenceTableOptions;
  /** kernel.threads-max (validated again here). */
  readonly threadsMax?: number;
  /** Reservation table sizes (validated again here). */
  readonly resv?: ResvTableOptions;
  /** Lock validation in the kernel lock domain (Machine.boot({ lockdep })). */
  readonly lockdep?: boolean;
  /** The lock watchdog runs (Machine.boot({ watchdog })): every worker needs a wait slot in the domain. */
  readonly watchdog?: boolean;
  /** How long a driver may sit on one upcall before it is declared dead (ms). */
  readonly driverTimeoutMs?: number;
  /** Driver lanes granted (Machine.boot({ driverLanes })). */
  readonly driverLanes?: boolean;
}

/** A driver worker's kernel side, for the main thread that starts the worker. */
export interface DriverInfo {
  readonly id: number;
  readonly channel: SharedArrayBuffer;
  /** Its bell (doorbell) and lane directory (src/shm/driver-lane.ts). */
  readonly bell: SharedArrayBuffer;
  readonly directory: SharedArrayBuffer;
  readonly owner: number;
  /** The driver's creator id in the fence table (FenceAttachOptions.attachId): its fences are found by it. */
  readonly fenceAttachId: number;
}

export interface ProcessInfo {
  readonly pid: number;
  readonly channel: SharedArrayBuffer;
  /** The process's owner token in the fence table's alive table (its spin slots and locks carry it). */
  readonly owner: number;
}

export interface KernelStats {
  /** Live tracked objects by kind (file, dma_buf, ...). */
  readonly objects: Record<string, number>;
  readonly processes: number;
  /** Driver lanes in use (one per task and driver) and the grants they hold (src/shm/driver-lane.ts). */
  readonly driverLanes: { readonly lanes: number; readonly grants: number };
}

export interface ShutdownReport {
  /** Kernel objects still alive once every process has ended: each a leak, with where it was created. */
  readonly leaks: LeakReport[];
  /**
   * What each process still held (fds, mappings) when it exited or was killed, by pid — released by its exit, as
   * in C, so not leaks. Processes that held nothing beyond fds 0–2 are not listed; at most 1000 are (the first to
   * end), `heldDropped` counts the rest. formatHeld() prints it.
   */
  readonly held: HeldReport[];
  readonly heldDropped: number;
  readonly oopses: Oops[];
  /** Every WARN() the kernel hit (execution went on). */
  readonly warnings: KernelWarning[];
  /**
   * Every lock report of the machine's lock domain no expectation matched (expectLockdepReports), oldest first:
   * validator findings, API misuse, watchdog deadlocks and hung waits. Filled in by Machine.shutdown (the main
   * thread reads the domain once every worker has ended); [] when lock validation was off.
   */
  readonly lockdep: LockdepReport[];
}

export class KernelControl {
  private k: Kernel | null = null;
  private entry: SyscallEntry | null = null;
  private loop: ServeLoop | null = null;
  private ctl: Int32Array | null = null;
  private fences: SharedArrayBuffer | null = null;
  /** The fence table's kernel state (createSplitFenceTable): kernel-side workers only, never a plain process. */
  private fenceKernel: SharedArrayBuffer | null = null;
  private fenceRt: FenceRuntime | null = null;
  /** The reservation table (kernel-side workers only) and the kernel lock domain its locks live in. */
  private resv: SharedArrayBuffer | null = null;
  private kernelLocks: LockDomain | null = null;
  /** pid → the owner token registered for the process in the alive table, cleared in reap. */
  private readonly owners = new Map<number, number>();
  /** Untracked owner tokens handed out when the alive table had no free entry (see newOwner). */
  private untrackedOwners = 0;

  /**
   * The owner token of a new task. The alive table is in the fence table's kernel state, which processes that play
   * drivers ({ kernelFences: true }) are handed, so it may be full — of forged entries, or of more than
   * ALIVE_ENTRIES live tasks. Then the task gets an untracked token
   * (bit 28 set, apart from untrackedOwner()'s thread ids): never presumed dead, so a lock it dies holding is not
   * taken over, but its spin slots still come back in reap — rather than a spawn or clone that fails half-made.
   */
  private newOwner(): number {
    try {
      return this.fenceRt!.table.alive!.register();
    } catch {
      return TOKEN_UNTRACKED | (1 << 28) | (this.untrackedOwners++ & ((1 << 28) - 1));
    }
  }

  /**
   * What a method's exception becomes for its caller on the main thread (the broker's expose() calls this): a
   * KernelError is the operation's -errno, so it crosses as a SyscallError naming the operation (code, errno,
   * syscall); a KernelBug or any other exception from kernel code is an oops, recorded for the shutdown report
   * like one in a syscall, and passed on. Errors of the control plane itself (SimError, TypeError) pass as they are.
   */
  errorAtEdge(e: unknown, method: string): unknown {
    if (e instanceof KernelError) return new SyscallError(e.errno, method, e.why);
    if (e instanceof KernelBug && this.entry) this.entry.recordOops(this.k?.current?.pid ?? 0, method, e);
    return e;
  }

  /**
   * `post` sends a message to the main thread on the broker's own port (workers/broker.ts): the worker starts of
   * tasks made by clone (fork.ts), ordered with the control plane's replies.
   */
  constructor(private readonly post: (msg: SpawnRequest | DriverDeadMessage, transfer: MessagePort[]) => void = () => {
    throw new Error('this kernel has no main thread to start workers');
  }) {}

  private readonly spawnSink = (req: SpawnRequest): void => {
    // A cloned task owns spin slots and locks like a spawned one: its token is cleared when reap(tid) runs.
    const owner = this.newOwner();
    this.owners.set(req.tid, owner);
    const t = this.k?.tasks.get(req.tid);
    if (t) t.owner = owner;
    this.post({ ...req, owner }, [req.port]);
  };
  /** Set by beginShutdown: the kernel's own state, not a shared word a process could set. */
  private shutdownBegun = false;
  private readonly shuttingDown = (): boolean => this.shutdownBegun;

  private get kernel(): Kernel {
    if (!this.k) throw new Error('kernel not booted');
    return this.k;
  }

  boot(cfg: BootConfig): SharedArrayBuffer {
    const k = new Kernel({ recordStacks: cfg.recordStacks ?? false });
    if (cfg.threadsMax !== undefined) {
      if (!Number.isInteger(cfg.threadsMax) || cfg.threadsMax < 1 || cfg.threadsMax > THREADS_MAX_LIMIT) throw new RangeError(`threadsMax ${cfg.threadsMax}`);
      k.threadsMax = cfg.threadsMax;
    }
    const entry = new SyscallEntry(k);
    registerFsSyscalls(entry);
    registerMmSyscalls(entry);
    registerPollSyscall(entry);
    registerForkSyscalls(entry, this.spawnSink, this.shuttingDown);
    registerCharDevices(k);
    const control = createControl(cfg.maxSpinners);
    // The machine's fence table, before any subsystem can make a fence. The broker is an event-loop thread: its
    // fence callbacks run promptly from a waitAsync watcher; fence/resv WARN()s go to the kernel's warnings.
    // Split: processes are handed `fences` only; the kernel-owned state (names, alive table, counters, allocator)
    // stays in `kernel`, handed to kernel-side workers.
    const { table: fences, kernel } = createSplitFenceTable({ ...fenceTableSizes(cfg.fences ?? {}, 'fences.'), maxSpinners: cfg.maxSpinners });
    const frt = attachFenceTable(fences, { control, maxSpinners: cfg.maxSpinners, eventLoop: true, kernel });
    // Processes learn from this word whether the kernel still lives (the main thread clears the token when the
    // broker worker exits): a call waiting for a reply then fails instead of waiting forever.
    Atomics.store(frt.table.k!, K_KERNEL_OWNER, frt.owner);
    this.fenceRt = frt;
    setWarningSink((message, expected) => k.recordWarning(message, expected), true);
    this.fences = fences;
    this.fenceKernel = kernel;
    // The kernel lock domain, made here so its owner tokens are the machine's (this thread's is the broker's). With
    // lockdep off it only carries the reservation locks' tickets and contexts, unchecked and unreported (dma_resv
    // reports a dead holder itself), in small tables.
    const locks = LockDomain.create(
      cfg.lockdep
        ? { liveness: 'machine' }
        : { liveness: 'machine', lockdep: false, maxClasses: 64, maxEdges: 64, arenaBytes: 1 << 16, maxReports: 64, maxWorkers: cfg.watchdog ? 256 : 1, suppress: [{ kind: 'api' }] },
      'broker',
    );
    // Every dma_resv of the machine, reachable by id from each kernel-side worker. The broker never sleeps on
    // one of their locks (noSleep: a BUG if it would).
    this.resv = createResvTable(resvTableSizes(cfg.resv ?? {}, 'resv.'));
    attachResvTable(this.resv, { domain: locks, noSleep: true });
    this.kernelLocks = locks;
    // A plain process's view of the alive table it is not handed (a lock waiter asking whether an owner died).
    const alive = frt.table.alive!;
    entry.register(SYS.owner_alive, (_k, req) => (alive.isAlive(req.int(0)) ? 1 : 0));
    bootSubsystems(k, entry, cfg);
    if (cfg.driverTimeoutMs !== undefined && !(Number.isInteger(cfg.driverTimeoutMs) && cfg.driverTimeoutMs > 0)) throw new RangeError(`driverTimeoutMs ${cfg.driverTimeoutMs}`);
    this.drivers = driverHostInit(k, entry, (msg) => this.post(msg, []), cfg.driverTimeoutMs);
    if (cfg.driverLanes === false) this.drivers.lanesEnabled = false;
    this.drivers.setLockDomain(locks);
    this.k = k;
    this.entry = entry;
    k.oopsSink = (pid, call, e) => entry.recordOops(pid, call, e);
    this.ctl = new Int32Array(control);
    this.loop = new ServeLoop(entry, this.ctl);
    this.loop.start();
    return control;
  }

  private drivers: DriverHost | null = null;

  /**
   * A driver worker's kernel side (driver-host.ts): its channel and owner token; `port` gets its SharedArrayBuffer
   * handles. The main thread starts the worker next and reaps it with reapDriver when it ends.
   */
  createDriver(name: string, port: MessagePort): DriverInfo {
    if (this.shutdownBegun) throw simError('ERR_DMABUF_SIM_SHUT_DOWN', ['loadDriver']);
    const drv = createDriver(this.drivers!, name.slice(0, 64), port);
    const owner = this.newOwner();
    this.driverOwners.set(drv.id, owner);
    drv.fenceCreator = this.fenceRt!.table.newAttachId();
    drv.owner = owner;
    return { id: drv.id, channel: drv.channel, bell: drv.lanes.bell, directory: drv.lanes.sab, owner, fenceAttachId: drv.fenceCreator };
  }

  private readonly driverOwners = new Map<number, number>();

  /** A driver worker ended (or never loaded): it is torn down as driver-host.ts kill() says. */
  async reapDriver(id: number): Promise<void> {
    const owner = this.driverOwners.get(id);
    if (owner !== undefined) {
      this.driverOwners.delete(id);
      releaseSpinSlots(spinBlockOf(this.ctl!.buffer as SharedArrayBuffer), owner);
      this.fenceRt!.table.alive!.clear(owner);
      this.kernelLocks?.releaseWaitSlot(owner);
    }
    await this.drivers?.reap(id);
    this.loop!.kick();
  }

  /** The machine's fence table (shared memory every worker may attach to with attachFenceTable). */
  fenceTable(): SharedArrayBuffer {
    if (!this.fences) throw new Error('kernel not booted');
    return this.fences;
  }

  /**
   * The reservation table and the kernel lock domain (SharedArrayBuffers): for kernel-side workers only (the main
   * thread, drivers, processes spawned with { kernelFences: true }) — never handed to a plain process.
   */
  resvTable(): { table: SharedArrayBuffer; locks: SharedArrayBuffer } {
    if (!this.resv || !this.kernelLocks) throw new Error('kernel not booted');
    return { table: this.resv, locks: this.kernelLocks.sab };
  }

  /**
   * The fence table's kernel state: for kernel-side workers only (the main thread, processes spawned with
   * { kernelFences: true }, future driver workers) — never handed to a plain process.
   */
  fenceKernelState(): SharedArrayBuffer {
    if (!this.fenceKernel) throw new Error('kernel not booted');
    return this.fenceKernel;
  }

  /**
   * Creates a process: pid, fd table with fds 0–2 open on /dev/null (so the first new fd is 3), a channel.
   * `port` is where the broker posts SharedArrayBuffer handles for this process.
   */
  createProcess(name: string, nofile: number | undefined, port: MessagePort): ProcessInfo {
    const k = this.kernel;
    const pid = k.allocPid();
    const channel = createChannel();
    const t = new Task(pid, name, channel, port);
    if (this.shutdownBegun) Atomics.store(t.channel.i32, SHUTDOWN, SHUTDOWN_BEGUN);
    if (nofile !== undefined) {
      // A parent that raised its own limits first: the hard limit goes up with the soft one when it must.
      if (nofile > t.nofileMax) t.nofileMax = nofile;
      t.nofileCur = nofile;
    }
    k.tasks.set(pid, t);
    // As a 64-bit parent's open("/dev/null", O_RDWR) leaves them: O_RDWR | O_LARGEFILE.
    // Their origin is null: what a process starts with is not listed as held when it ends.
    for (let fd = 0; fd < 3; fd++) k.installFd(t, k.openPath(t, '/dev/null', O_RDWR | O_LARGEFILE) as File, false, 0, null);
    this.entry!.addTask(t);
    const owner = this.newOwner();
    this.owners.set(pid, owner);
    t.owner = owner;
    return { pid, channel, owner };
  }

  /**
   * Reaps a process whose worker ended (exit, uncaught error, terminate): the same teardown as exit(). `killed`:
   * the main thread terminated it (Proc.kill, shutdown), as the shutdown report's held list says.
   */
  async reap(pid: number, code: number, killed = false): Promise<void> {
    const k = this.kernel;
    const owner = this.owners.get(pid);
    if (owner !== undefined) {
      // The worker is gone: the spin slots it held (killed mid-spin) come back, and waiters on locks it held
      // see it dead from now on (robust locks, src/fence/table.ts). Nothing here waits on the process.
      this.owners.delete(pid);
      releaseSpinSlots(spinBlockOf(this.ctl!.buffer as SharedArrayBuffer), owner);
      this.fenceRt!.table.alive!.clear(owner);
      this.kernelLocks?.releaseWaitSlot(owner);
    }
    const t = k.tasks.get(pid);
    if (!t) return;
    k.teardown(t, code, killed);
    this.entry!.removeTask(t);
    k.tasks.delete(pid);
    // The driver releases its last puts started (exit_files' __fput runs before exit_notify): the reap, and the
    // parent's wait, complete after them. Bounded as Kernel.asyncRelease says (driver answer, death or timeout);
    // empty for a task that held no driver files.
    if (t.releases.size > 0) await Promise.all([...t.releases]);
    // Last: a parent's wait returns only once everything above is released.
    notifyParent(t, t.exitCode ?? code);
    this.loop!.kick();
  }

  /**
   * clone(2) on behalf of process `pid`, from the main thread (Proc.fork / Proc.thread): `flags` 0 forks, CLONE_PTHREAD
   * makes a thread; the new task is `pid`'s child (its waitpid sees it) and its worker is started by the main thread
   * from the SpawnRequest that precedes this call's reply. Returns the new task's id.
   */
  clone(pid: number, flags: number, spec: CloneSpec): number {
    return this.asTask(pid, 'clone', (k, t) => cloneTask(k, this.entry!, this.spawnSink, t, flags, spec, this.shuttingDown));
  }

  /** Runs `fn` as if task `pid` made a syscall (fd installs from the control plane). */
  private asTask<R>(pid: number, call: string, fn: (k: Kernel, t: Task) => R): R {
    const k = this.kernel;
    const t = k.tasks.get(pid);
    if (!t || t.state !== 'running') throw simError('ERR_DMABUF_SIM_PROCESS_ENDED', [`no running process ${pid}`]);
    const prev = k.current;
    k.current = t;
    t.currentCall = call;
    try {
      return fn(k, t);
    } finally {
      k.current = prev;
      this.loop!.kick();
    }
  }

  /**
   * socketpair(AF_UNIX, type) with one end installed in each process (pidA may equal pidB): returns [fd in A,
   * fd in B], each at its process's lowest free fd. SOCK_CLOEXEC / SOCK_NONBLOCK in `type` apply to both ends.
   * Errors are the syscall's (EINVAL, EMFILE, ESOCKTNOSUPPORT...); nothing is left installed on failure.
   */
  socketpair(pidA: number, pidB: number, type: number): [number, number] {
    const flags = socketpairFlags(type);
    const cloexec = (flags & O_CLOEXEC) !== 0;
    const [fa, fb] = this.asTask(pidA, 'Machine.socketpair', (k) => afUnixOf(k).createPair(AF_UNIX, type & SOCK_TYPE_MASK, 0, flags));
    let fdA: number;
    try {
      fdA = this.asTask(pidA, 'Machine.socketpair', (k, t) => k.installFd(t, fa, cloexec));
    } catch (e) {
      this.kernel.fput(fa);
      this.kernel.fput(fb);
      throw e;
    }
    try {
      return [fdA, this.asTask(pidB, 'Machine.socketpair', (k, t) => k.installFd(t, fb, cloexec))];
    } catch (e) {
      this.asTask(pidA, 'Machine.socketpair', (k, t) => k.closeFd(t, fdA));
      this.kernel.fput(fb);
      throw e;
    }
  }

  // ---- test / driver hooks for implicit fences (no uAPI reaches these) ------------------------------------------

  /**
   * TEST/DRIVER HOOK: dma_resv_add_fence(fence, usage) on the buffer behind `fd` of process `pid` — what a driver
   * does once it has queued work on the buffer (lock, reserve one slot, add, unlock). `fence` is a handle into the
   * machine's fence table, made by any worker (a process, the test's main thread): the caller keeps the reference
   * it holds (and puts it when done); the reservation object takes its own. `usage`: 0 KERNEL, 1 WRITE, 2 READ,
   * 3 BOOKKEEP — the only way to add KERNEL and BOOKKEEP fences, which no ioctl adds. Errors as dma_buf_get
   * (EBADF; EINVAL for an fd that is not a dma-buf), EINVAL for a bad usage; a stale handle throws.
   */
  async testDmaBufAddFence(pid: number, fd: number, fence: FenceHandle, usage: number): Promise<void> {
    const [buf, f] = this.asTask(pid, 'testDmaBufAddFence', (k, t) => {
      if (!(usage === 0 || usage === 1 || usage === 2 || usage === 3)) throw new KernelError(E.EINVAL, `usage ${usage}`);
      const f = dmaFenceFromHandle(fence);
      return [dmaBufGet(k, t, fd), f] as const;
    });
    const k = this.kernel;
    try {
      // Event-loop context: a driver may hold the lock; the broker waits for it asynchronously, never asleep.
      await dmaResvLockAsync(buf.resv);
      try {
        const r = dmaResvReserveFences(buf.resv, 1);
        if (r) throw new KernelError(-r);
        dmaResvAddFence(buf.resv, f, usage as DmaResvUsage);
      } finally {
        dmaResvUnlock(buf.resv);
      }
    } finally {
      dmaBufPut(k, buf);
      this.loop!.kick();
    }
  }

  /**
   * TEST/DRIVER HOOK: the machine-wide id of the reservation object of the buffer behind `fd` of process `pid`
   * (dmaResvFromId in a kernel-side worker reaches it). Errors as dma_buf_get.
   */
  dmaBufResvId(pid: number, fd: number): number {
    return this.asTask(pid, 'dmaBufResvId', (k, t) => {
      const buf = dmaBufGet(k, t, fd);
      const id = buf.resv.id;
      dmaBufPut(k, buf);
      return id;
    });
  }

  /**
   * TEST/DRIVER HOOK: an in-broker kernel caller doing CPU access to the buffer behind `fd` of process `pid` the
   * event-loop way (fence-wait.ts): dma_buf_get, dmaBufBeginCpuAccessAsync(dir) — resolved once the implicit
   * fences it needs have signaled, while the broker keeps serving syscalls — then dma_buf_end_cpu_access and
   * dma_buf_put. `dir` is a dma_data_direction (0 BIDIRECTIONAL, 1 TO_DEVICE = CPU write, 2 FROM_DEVICE = read).
   */
  async testDmaBufCpuAccessAsync(pid: number, fd: number, dir: number): Promise<void> {
    if (!(dir === 0 || dir === 1 || dir === 2)) throw new KernelError(E.EINVAL, `direction ${dir}`);
    const d = dir as DmaDataDirection;
    const buf = this.asTask(pid, 'testDmaBufCpuAccessAsync', (k, t) => dmaBufGet(k, t, fd));
    const k = this.kernel;
    try {
      await dmaBufBeginCpuAccessAsync(k, buf, d);
      dmaBufEndCpuAccess(k, buf, d);
    } finally {
      dmaBufPut(k, buf);
      this.loop!.kick();
    }
  }

  /**
   * TEST/DRIVER HOOK: a static importer (device `devName`) attaching to the buffer behind `fd` of process `pid`
   * and mapping it the event-loop way: dmaBufMapAttachmentAsync waits for the KERNEL fences (the exporter's moves
   * and clears) without blocking the broker. Then unmap, detach, put. Resolves with the mapped length in bytes.
   */
  async testDmaBufMapAsync(pid: number, fd: number, devName: string): Promise<number> {
    const buf = this.asTask(pid, 'testDmaBufMapAsync', (k, t) => dmaBufGet(k, t, fd));
    const k = this.kernel;
    try {
      const att = dmaBufAttach(k, buf, { name: devName });
      try {
        const sgt = await dmaBufMapAttachmentAsync(k, att, DMA_TO_DEVICE);
        dmaBufUnmapAttachment(k, att, sgt, DMA_TO_DEVICE);
        return sgt.length;
      } finally {
        dmaBufDetach(k, buf, att);
      }
    } finally {
      dmaBufPut(k, buf);
      this.loop!.kick();
    }
  }

  /** The heaps under /dev/dma_heap (what a listing of the directory shows), with their usage. */
  heaps(): DmaHeapInfo[] {
    return dmaHeapList(this.kernel);
  }

  /** Every live dma-buf, newest first, as plain data. */
  dmabufs(): DmaBufSnapshot[] {
    return dmaBufList(this.kernel).map(dmaBufSnapshot);
  }

  private readonly warningExpectations = new Map<number, WarningExpectation>();
  private nextExpectationId = 1;

  /**
   * TEST HOOK: from now until expectWarningsEnd(id), kernel warnings matching `pattern` (any process, any call)
   * are expected — marked so in the report and counted in one line instead of printed (src/bug.ts).
   */
  expectWarningsBegin(pattern: RegExp, label: string): number {
    const id = this.nextExpectationId++;
    this.warningExpectations.set(id, beginExpectWarnings(pattern, label));
    return id;
  }

  /** TEST HOOK: ends expectation `id`; returns the warnings it matched (none for an unknown id). */
  expectWarningsEnd(id: number): string[] {
    const exp = this.warningExpectations.get(id);
    this.warningExpectations.delete(id);
    return exp ? endExpectWarnings(exp) : [];
  }

  /**
   * TEST HOOK: runs the in-kernel KUnit case `name` (kunit.ts; its modules load on first use, never at boot),
   * optionally as process `pid`. A BUG in it is recorded as an oops, like one in a syscall.
   */
  async kunitRun(name: string, pid?: number): Promise<KunitResult> {
    const { fn, names } = await findKunitCase(name);
    if (!fn) throw simError('ERR_DMABUF_SIM_NO_KUNIT_CASE', [name, names.join(', ')]);
    const k = this.kernel;
    const t = pid === undefined ? null : (k.tasks.get(pid) ?? null);
    if (pid !== undefined && (!t || t.state !== 'running')) throw simError('ERR_DMABUF_SIM_PROCESS_ENDED', [`no running process ${pid}`]);
    try {
      return runKunitCase(k, name, fn, t, (p, call, e, expected) => this.entry!.recordOops(p, call, e, expected));
    } finally {
      this.loop!.kick();
    }
  }

  debugfsRead(path: string): string {
    const gen = this.kernel.debugfs.get(path);
    if (!gen) throw simError('ERR_DMABUF_SIM_NO_DEBUGFS_FILE', [path, [...this.kernel.debugfs.keys()].join(', ')]);
    return gen();
  }

  stats(): KernelStats {
    const k = this.kernel;
    const objects: Record<string, number> = {};
    for (const l of k.tracker.report()) objects[l.kind] = (objects[l.kind] ?? 0) + 1;
    let lanes = 0;
    let grants = 0;
    for (const drv of this.drivers?.drivers.values() ?? []) {
      lanes += drv.lanes.lanes;
      grants += drv.lanes.grants;
    }
    return { objects, processes: k.tasks.size, driverLanes: { lanes, grants } };
  }

  /**
   * The machine's spin slots (src/shm/spin.ts): how many may be used at once and how many are taken now. With no
   * process running, a taken slot is a leak (a process killed mid-spin whose slot was not given back).
   */
  /** Syscalls parked in the kernel now (see SyscallEntry.parkedCount). */
  parkedCalls(): number {
    return this.entry!.parkedCount();
  }

  spinSlots(): { max: number; inUse: number } {
    const block = spinBlockOf(this.ctl!.buffer as SharedArrayBuffer);
    return { max: Atomics.load(block, SB_MAX), inUse: spinSlotsInUse(block) };
  }

  /** Everything still alive (with origins); with no processes left, anything here is a leak. */
  leaks(): LeakReport[] {
    // Live fences (the global stub excepted) live in the shared table, created by any worker: listed with their
    // creator's attach id and creation serial.
    const fences: LeakReport[] = (this.fences ? liveFences(this.fences, this.fenceKernel) : []).map((f) => ({
      id: 0,
      kind: 'dma_fence',
      what:
        `${f.kind} ${f.driver}:${f.timeline} ctx ${f.context} seq ${f.seqno} ` +
        `${f.signaled ? 'signaled' : 'unsignaled'} refcount ${f.refcount}${f.cbPending ? ` callbacks ${f.cbPending}` : ''}`,
      createdBy: { pid: 0, comm: `attach#${f.creator}`, call: 'dma_fence_init', seq: f.serial },
    }));
    // Live reservation objects: in the shared table too, made by any kernel-side worker, named by their origin.
    const resvs: LeakReport[] = (this.resv ? liveResvs(this.resv) : []).map((r) => ({
      id: 0,
      kind: 'dma_resv',
      what: `dma_resv ${r.id} ${r.numFences} fence(s)${r.locked ? ' locked' : ''}`,
      createdBy: { pid: 0, comm: r.origin, call: 'dma_resv_init', seq: r.serial },
    }));
    return [...this.kernel.tracker.report(), ...fences, ...resvs];
  }

  /**
   * Shutdown, once every process is reaped and before the drivers are stopped: waits until no driver release is in
   * flight (Kernel.asyncRelease) — a release may put buffers whose own releases are upcalls again, so until the set
   * stays empty — then the leak report sees what the drivers' releases freed. Bounded twice: each release settles
   * by the driver's answer, death or watchdog (driverTimeoutMs); and the whole wait gives up after 3 × that
   * (a driver whose queue keeps growing), naming what it left.
   */
  async settleReleases(): Promise<void> {
    const k = this.kernel;
    const limitMs = 3 * (this.drivers?.timeoutMs ?? DEFAULT_DRIVER_TIMEOUT_MS);
    const deadline = performance.now() + limitMs;
    while (k.releasesInFlight.size > 0) {
      const left = deadline - performance.now();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), Math.max(0, left))));
      const r = await Promise.race([Promise.all([...k.releasesInFlight]), late]);
      clearTimeout(timer);
      if (r === 'late') {
        warn(`shutdown: ${k.releasesInFlight.size} driver release(s) still pending after ${limitMs} ms`);
        return;
      }
    }
  }

  /** First half of shutdown: parked calls fail with ESHUTDOWN, new calls fail at once. */
  beginShutdown(): void {
    // Each process's own word: a process can set its own (and stop only itself), never another's.
    this.shutdownBegun = true;
    for (const t of this.kernel.tasks.values()) Atomics.store(t.channel.i32, SHUTDOWN, SHUTDOWN_BEGUN);
    this.entry!.abortParked(E.ESHUTDOWN);
  }

  /** Last half: the report (its lockdep part is the main thread's); the loop stops (the worker is terminated next). */
  finishShutdown(): Omit<ShutdownReport, 'lockdep'> {
    const k = this.kernel;
    const report = {
      leaks: this.leaks(),
      held: [...k.held].sort((a, b) => a.pid - b.pid),
      heldDropped: k.heldDropped,
      oopses: [...this.entry!.oopses],
      warnings: [...k.warnings],
    };
    this.loop!.stop();
    this.drivers?.stop();
    return report;
  }
}
