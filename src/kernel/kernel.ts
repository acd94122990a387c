/**
 * The simulated kernel's global state and the core object lifetimes: tasks, open files (fget/fput), fd install
 * and close, the path namespace, debugfs, and process teardown.
 *
 * Locking: everything here runs on the broker thread, one syscall at a time, so kernel state needs no locks; the
 * objects that other threads touch directly (buffer pages, fence words) live in SharedArrayBuffers and say how.
 */
import { BUG, printLine, warn } from '../bug.js';
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import { O_CLOEXEC } from '../uapi/posix.js';
import { File, type FileOperations } from './file.js';
import { ObjectTracker, type HeldReport, type Origin } from './leaks.js';
import { ShmRegion } from './mm.js';
import { Task } from './task.js';
import type { Blocked } from './wait.js';

/** Default kernel.threads-max: each task is a host worker thread (megabytes each), so far below Linux's. */
export const DEFAULT_THREADS_MAX = 256;
/** The highest threads-max a machine may be booted with. */
export const THREADS_MAX_LIMIT = 4096;

/**
 * Opens a path the namespace resolves to: returns a new File with one reference — or, for a device served by a
 * driver worker, a parked call whose result is the installed fd (the driver's open answers later).
 */
export type Opener = (k: Kernel, t: Task, path: string, flags: number) => File | Blocked;

interface PrefixOpener {
  readonly prefix: string;
  readonly open: Opener;
}

/** A WARN() the kernel hit: on Linux a splat in the log, execution goes on. Reported at shutdown. */
export interface KernelWarning {
  readonly pid: number;
  readonly call: string;
  readonly message: string;
  /** True when a test provoked it on purpose and said so (expectWarnings in src/bug.ts); such a one is not printed. */
  readonly expected: boolean;
}

export interface KernelOptions {
  /** Record the caller's stack with every tracked object (costly: a stack per syscall). */
  readonly recordStacks?: boolean;
}

export class Kernel {
  readonly tasks = new Map<number, Task>();
  /** kernel.threads-max: the most tasks alive at once that clone may make (Machine.boot's threadsMax). */
  threadsMax = DEFAULT_THREADS_MAX;
  private nextPid = 1;
  /** get_next_ino(): inode numbers for sockets, device files, anon files. */
  private nextIno = 1;
  private nextRegionId = 1;
  readonly tracker = new ObjectTracker();
  private readonly paths = new Map<string, Opener>();
  private readonly prefixes: PrefixOpener[] = [];
  readonly debugfs = new Map<string, () => string>();
  /** Called whenever a task is torn down (pid) — subsystems drop per-process state. */
  readonly exitHooks: ((t: Task) => void)[] = [];
  /** The origin stamped on objects created outside any syscall (control plane, kernel threads). */
  private readonly kernelOrigin: Origin = { pid: 0, comm: 'kernel', call: 'control', seq: 0 };
  /**
   * What each ended process still held (see HeldReport), in teardown order; at most MAX_HELD processes are kept
   * (heldDropped counts the rest), so a machine that runs millions of processes stays bounded.
   */
  readonly held: HeldReport[] = [];
  heldDropped = 0;
  /** Every WARN() so far, in order (see warn()). */
  readonly warnings: KernelWarning[] = [];
  /** The task whose syscall is being served (null on the control plane). */
  current: Task | null = null;
  currentStack: string | undefined;

  constructor(readonly options: KernelOptions = {}) {}

  // ---- identifiers -------------------------------------------------------------------------------------------

  allocPid(): number {
    return this.nextPid++;
  }
  getNextIno(): number {
    return this.nextIno++;
  }
  newRegion(sab: SharedArrayBuffer, byteOffset: number, size: number): ShmRegion {
    return new ShmRegion(this.nextRegionId++, sab, byteOffset, size);
  }

  /** Where an object created now comes from: the current syscall, or the kernel. */
  origin(): Origin {
    const t = this.current;
    if (!t) return this.kernelOrigin;
    return { pid: t.pid, comm: t.comm, call: t.currentCall, seq: t.syscalls, stack: this.currentStack };
  }

  /**
   * The broker's WARN() sink: kernel code calls warn()/warnOn() from src/bug.ts, and the control plane points that
   * module's sink here at boot, so each warning is recorded with the task and call it hit in (the shutdown report
   * lists them) and printed. Not to be called directly.
   */
  recordWarning(message: string, expected = false): void {
    const t = this.current;
    this.warnings.push({ pid: t?.pid ?? 0, call: t?.currentCall ?? 'control', message, expected });
    if (!expected) printLine(`dmabuf-sim: WARNING in pid ${t?.pid ?? 0} ${t?.currentCall ?? 'control'}: ${message}`);
  }

  // ---- deferred work -----------------------------------------------------------------------------------------

  private readonly deferred: (() => void)[] = [];
  private deferScheduled = false;

  /**
   * Work that must not run inside the current call chain (a wake from a fence callback that would re-enter the
   * op that armed it). Runs after the current syscall's reply (SyscallEntry calls runDeferred), or in a microtask
   * when nothing is being dispatched (fence-callback pumps, the control plane) — never later than that, so a wake
   * deferred in a busy serve slice does not wait for the slice to end.
   */
  defer(fn: () => void): void {
    this.deferred.push(fn);
    if (this.deferScheduled) return;
    this.deferScheduled = true;
    queueMicrotask(() => this.runDeferred());
  }

  /** Runs the deferred work queued so far (and any it queues in turn). */
  runDeferred(): void {
    this.deferScheduled = false;
    while (this.deferred.length > 0) {
      const fn = this.deferred.shift()!;
      try {
        fn();
      } catch (e) {
        // A bug in deferred work must not take the broker down with it: report it and go on.
        warn(`BUG in deferred work: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
    }
  }

  // ---- files ---------------------------------------------------------------------------------------------------

  /** alloc_file: a new open file with one reference, tracked until its last put. */
  allocFile<P>(ops: FileOperations, priv: P, fmode: number, flags: number, ino = this.getNextIno()): File<P> {
    const f = new File<P>(ops, priv, fmode, flags & ~O_CLOEXEC, ino);
    f.trackId = this.tracker.add('file', this.origin(), () => `${ops.kind} file ${ops.dname(f)} (count ${f.count})`);
    return f;
  }

  /** get_file: one more reference to an open file. */
  fget(f: File): File {
    if (f.count <= 0) BUG(`get of released file ${f.ops.kind}`);
    f.count++;
    return f;
  }

  /** fput: drops one reference; the last one releases the file (ops.release runs now, synchronously). */
  fput(f: File): void {
    if (f.count <= 0) BUG(`put of released file ${f.ops.kind}`);
    if (--f.count > 0) return;
    this.tracker.remove(f.trackId);
    f.ops.release?.(f);
  }

  /** Releases completing in a driver worker, machine-wide (Kernel.asyncRelease): shutdown waits for them. */
  readonly releasesInFlight = new Set<Promise<void>>();
  /**
   * Where asyncRelease collects the releases started now for whoever must wait for them before going on: the
   * syscall being dispatched (SyscallEntry parks its reply on them) or a teardown; null elsewhere (a put made by a
   * driver's downcall or a kernel callback: nobody returns to userspace after it).
   */
  releaseSink: Promise<void>[] | null = null;

  /**
   * The last put of a file whose release runs elsewhere — a driver's fops.release or an exported dma-buf's
   * exp_release, both upcalls — registers the upcall's promise here. In Linux the last fput from a task queues
   * __fput as task_work, run before the syscall returns to userspace (and before do_exit notifies the parent), so
   * close() returns after ->release ran. Here the current syscall parks on it (releaseSink), the current task's reap
   * waits for it (Task.releases), and shutdown waits for every one still in flight (releasesInFlight).
   *
   * Bounded: the promise settles when the driver answers, or with ENODEV when it dies or the watchdog declares it
   * dead after driverTimeoutMs (driver-host.ts kill settles every posted and queued upcall). A release's own error
   * is dropped, as __fput ignores ->release's return value: close() still returns 0. Broker thread only.
   */
  asyncRelease(p: Promise<unknown>): void {
    const settled = p.then(
      () => {},
      () => {},
    );
    const t = this.current;
    this.releasesInFlight.add(settled);
    t?.releases.add(settled);
    void settled.then(() => {
      this.releasesInFlight.delete(settled);
      t?.releases.delete(settled);
    });
    this.releaseSink?.push(settled);
  }

  /**
   * Files the syscall being served looked up with fileOf, in order (emptied at each dispatch). A call that parks
   * takes a reference on each for as long as it stays parked (SyscallEntry.park), as fdget does when the fd table
   * is shared: another thread's close of the fd then cannot release the file under the sleeping call.
   */
  readonly callFiles: File[] = [];

  /**
   * fdget: the file behind a task's fd, or EBADF. Takes no reference while the call runs (the broker serves one
   * call at a time, so nobody closes it meanwhile); it is recorded in callFiles for a call that parks.
   */
  fileOf(t: Task, fd: number): File {
    const e = t.getFd(fd);
    if (!e) throw new KernelError(E.EBADF);
    this.callFiles.push(e.file);
    return e.file;
  }

  /**
   * fd_install at the lowest free number ≥ minFd. Consumes the caller's reference on success; on EMFILE the
   * reference is NOT consumed (the caller decides: dma_buf_fd's callers put it, recvmsg closes it).
   */
  installFd(t: Task, f: File, cloexec: boolean, minFd = 0, origin: Origin | null = this.origin()): number {
    const fd = t.lowestFreeFd(minFd);
    if (fd < 0) throw new KernelError(E.EMFILE);
    t.files.install(fd, { file: f, cloexec, origin });
    return fd;
  }

  /**
   * do_dup2's install: puts `f` (the caller's reference, consumed) at `fd`, whatever was there, and closes what
   * was. The caller checked `fd` against the limit.
   */
  replaceFd(t: Task, fd: number, f: File, cloexec: boolean): void {
    const old = t.files.remove(fd);
    t.files.install(fd, { file: f, cloexec, origin: this.origin() });
    if (old) this.fput(old.file);
  }

  /** close_fd: removes the fd and puts its reference. EBADF when not open. */
  closeFd(t: Task, fd: number): void {
    const e = t.files.remove(fd);
    if (!e) throw new KernelError(E.EBADF);
    this.fput(e.file);
  }

  // ---- namespace -----------------------------------------------------------------------------------------------

  registerPath(path: string, open: Opener): void {
    if (this.paths.has(path)) throw new Error(`path ${path} registered twice`);
    this.paths.set(path, open);
  }
  registerPrefix(prefix: string, open: Opener): void {
    this.prefixes.push({ prefix, open });
  }
  unregisterPath(path: string): void {
    this.paths.delete(path);
  }
  /** Every registered exact path (for listing /dev/dma_heap and the like). */
  listPaths(prefix: string): string[] {
    return [...this.paths.keys()].filter((p) => p.startsWith(prefix)).sort();
  }

  /** Path walk: exact device paths first, then prefix handlers (/proc/<pid>/..., debugfs). ENOENT otherwise. */
  openPath(t: Task, path: string, flags: number): File | Blocked {
    const exact = this.paths.get(path);
    if (exact) return exact(this, t, path, flags);
    for (const p of this.prefixes) if (path.startsWith(p.prefix)) return p.open(this, t, path, flags);
    throw new KernelError(E.ENOENT);
  }

  /** Resolves "/proc/self/..." and "/proc/<pid>/..." to the task and the rest of the path. */
  procTask(t: Task, path: string): { task: Task; rest: string } {
    const m = /^\/proc\/(self|\d+)\/(.*)$/.exec(path);
    if (!m) throw new KernelError(E.ENOENT);
    const task = m[1] === 'self' ? t : this.tasks.get(Number(m[1]));
    if (!task || task.state !== 'running') throw new KernelError(E.ENOENT);
    return { task, rest: m[2]! };
  }

  // ---- processes -----------------------------------------------------------------------------------------------

  /** Where a BUG hit outside a syscall is reported (the syscall entry's oops list; set at boot). */
  oopsSink: ((pid: number, call: string, e: unknown) => void) | null = null;

  /** fput for teardown: an exception in the release is reported as an oops instead of ending the teardown. */
  private exitPut(t: Task, f: File): void {
    try {
      this.fput(f);
    } catch (e) {
      if (!this.oopsSink) throw e;
      this.oopsSink(t.pid, 'exit', e);
    }
  }

  /**
   * do_exit: releases everything the task holds — a parked syscall is abandoned, its use of the address space
   * dropped (exit_mm: the last user's drop puts every mapping), then its use of the fd table (exit_files: the last
   * user's drop closes every fd; a thread that shares the table closes nothing). Runs for exit(), an uncaught
   * error and worker termination alike; idempotent. The task's wait record is completed by the control plane's
   * reap, once its worker is gone too.
   */
  teardown(t: Task, code: number, killed = false): void {
    if (t.state === 'dead') return;
    t.state = 'dead';
    t.exitCode = code;
    const prev = this.current;
    const prevSink = this.releaseSink;
    this.current = t;
    // The releases teardown starts are the task's (Task.releases, awaited by the reap), not the current call's.
    this.releaseSink = null;
    t.currentCall = 'exit';
    try {
      t.parked?.cancel();
      t.parked = null;
      this.recordHeld(t, code, killed);
      // Each put on its own: a BUG in one release (a fence word a process corrupted) is reported and the rest of
      // the teardown still runs.
      if (--t.mm.users === 0) for (const vma of t.mm.vmas.splice(0)) this.exitPut(t, vma.file);
      t.regionRefs.clear();
      if (--t.files.users === 0) t.files.closeAll((e) => this.exitPut(t, e.file));
      t.group.tasks.delete(t);
      if (t.group.tasks.size === 0) {
        // The last task of the group: its unwaited children are reparented to "init", which waits for nobody.
        for (const c of this.tasks.values()) if (c.parent === t.group) c.parent = null;
        t.group.children.clear();
      }
      for (const hook of this.exitHooks) hook(t);
    } finally {
      this.current = prev;
      this.releaseSink = prevSink;
      t.port?.close();
    }
  }

  /**
   * Notes what `t` still holds as it ends, before teardown releases it: its fds (but those it started with) if it
   * is the fd table's last user, its mappings if it is the address space's last user. Nothing is noted for a
   * process that held nothing more.
   */
  private recordHeld(t: Task, code: number, killed: boolean): void {
    const describe = (f: File): string => `${f.ops.kind} ${f.ops.dname(f)}`;
    const fds =
      t.files.users === 1
        ? [...t.files].flatMap(([fd, e]) => (e.origin ? [{ fd, what: describe(e.file), createdBy: e.origin }] : []))
        : [];
    const mappings =
      t.mm.users === 1 ? t.mm.vmas.map((v) => ({ address: v.start, length: v.length, what: describe(v.file), createdBy: v.origin })) : [];
    if (fds.length === 0 && mappings.length === 0) return;
    if (this.held.length >= MAX_HELD) this.heldDropped++;
    else this.held.push({ pid: t.pid, comm: t.comm, exitCode: code, killed, fds, mappings });
  }
}

/** Most ended processes whose holdings a shutdown report lists. */
const MAX_HELD = 1000;
