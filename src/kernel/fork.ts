/**
 * fork and threads (kernel/fork.c, kernel/exit.c): clone(2) making a process with a copy of the caller's fd table
 * and mappings or a thread sharing them, and wait4(2) settling only once the child is gone. Broker thread only.
 *
 * The model's clone takes, besides the flags, what the new worker runs (an ES module and the arguments of its
 * `main`), since a worker cannot continue the caller's JavaScript stack: the child starts fresh in that module
 * with the kernel state fork gives it (fds, mappings, rlimits), like a fork followed at once by a call.
 *
 * Who makes the worker: the broker creates the task (pid, channel, tables) synchronously inside the syscall, so
 * the caller gets the pid at once and every kernel-side effect is in place; then it asks the main thread to start
 * the worker (a message on the broker's own port, ordered with its control-plane replies). The main thread owns
 * every process worker, so one place observes every exit and reaps it: a parent that dies leaves its children
 * running and reaped as before, and shutting the machine down kills them all.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import { CLONE_PTHREAD, WNOHANG } from '../uapi/posix.js';
import { createChannel, SYS } from '../shm/channel.js';
import type { SyscallEntry, SyscallRequest } from './entry.js';
import type { Kernel } from './kernel.js';
import { Vma } from './mm.js';
import { MmStruct, Task, ThreadGroup } from './task.js';
import { Blocked } from './wait.js';

/** What the new worker runs, as the clone syscall carries it (JSON in DATA). */
export interface CloneSpec {
  /** The ES module URL (file: URL or absolute path). */
  readonly module: string;
  /** comm of the new task; the caller's when absent (fork copies comm). */
  readonly name?: string;
  /** Arguments of the module's `main` (JSON values). */
  readonly args: readonly unknown[];
}

/** The main thread's order to start a worker for a task the kernel made (posted with `port` transferred). */
export interface SpawnRequest {
  readonly kind: 'dmabuf-sim:spawn';
  /** The new task's own id (what gettid returns, the key of its Proc). */
  readonly tid: number;
  /** Its thread group's id (getpid): tid for a process, the creator's tgid for a thread. */
  readonly tgid: number;
  readonly thread: boolean;
  readonly name: string;
  readonly channel: SharedArrayBuffer;
  /** The process end of the task's SAB-handle port. */
  readonly port: MessagePort;
  readonly module: string;
  readonly args: readonly unknown[];
  /** The task's owner token in the alive table (stamped by the control plane's sink; see src/shm/alive.ts). */
  readonly owner?: number;
}

/** Sends a SpawnRequest to the main thread (transferring its port). */
export type SpawnSink = (req: SpawnRequest) => void;

/**
 * copy_process: a new task made by `parent`, a process (`flags` 0: fork) or a thread (`flags` CLONE_PTHREAD).
 * Fork gives the child new references to every open file of the caller's table at the same numbers with the
 * same close-on-exec bits (dup_fd), a copy of its mapping list holding its own file references (dup_mmap: the
 * same MAP_SHARED memory), and its rlimits; a thread shares the table, the address space and the thread group.
 * Either way the child is the caller's group's child until waited for. Only these two flag sets exist here
 * (other combinations → EINVAL, as the kernel refuses CLONE_THREAD without CLONE_SIGHAND and CLONE_SIGHAND
 * without CLONE_VM; partial sharing is not modelled). EAGAIN when the machine already has threads-max tasks
 * (Machine.boot's threadsMax). The caller adds the task to the serve loop.
 */
export function copyProcess(k: Kernel, parent: Task, flags: number, comm: string, channel: SharedArrayBuffer, port: MessagePort): Task {
  // kernel.threads-max: every task is a worker thread of the host, so runaway forks end with EAGAIN, as Linux's.
  if (k.tasks.size >= k.threadsMax) throw new KernelError(E.EAGAIN, `threads-max (${k.threadsMax}) tasks alive`);
  const pid = k.allocPid();
  let t: Task;
  if (flags === CLONE_PTHREAD) {
    parent.files.users++;
    parent.mm.users++;
    t = new Task(pid, comm, channel, port, parent.group, parent.files, parent.mm);
  } else if (flags === 0) {
    const files = parent.files.copy((f) => k.fget(f));
    const mm = new MmStruct();
    mm.nextMmapAddr = parent.mm.nextMmapAddr;
    for (const v of parent.mm.vmas) {
      const n = new Vma(v.start, v.end, k.fget(v.file), v.pgoff, v.prot, v.flags, v.origin);
      n.region = v.region;
      n.regionOffset = v.regionOffset;
      mm.vmas.push(n);
    }
    const group = new ThreadGroup(pid, parent.group);
    group.nofileCur = parent.group.nofileCur;
    group.nofileMax = parent.group.nofileMax;
    t = new Task(pid, comm, channel, port, group, files, mm);
  } else {
    throw new KernelError(E.EINVAL, 'clone: only fork (0) and pthread_create flags are modelled');
  }
  t.parent = parent.group;
  parent.group.children.set(pid, { status: null });
  k.tasks.set(pid, t);
  return t;
}

/**
 * The child's end, told to whoever may wait (release_task → do_notify_parent): records `status` in its parent
 * group's child record and wakes that group's waiters. Called by the control plane's reap once the task is torn
 * down and its worker gone, so a wait that returns finds everything the child held released. No-op for tasks no
 * group waits for (spawned by the main thread, or orphaned).
 */
export function notifyParent(t: Task, status: number): void {
  const g = t.parent;
  t.parent = null;
  const rec = g?.children.get(t.pid);
  if (!g || !rec) return;
  rec.status = status;
  g.childExit.wake();
}

/** Checks the JSON a process sent with clone (the kernel does not trust it). */
function parseSpec(text: string): CloneSpec {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new KernelError(E.EINVAL, 'clone: malformed spec');
  }
  const o = v as Partial<CloneSpec> | null;
  if (!o || typeof o.module !== 'string' || !Array.isArray(o.args) || (o.name !== undefined && typeof o.name !== 'string')) {
    throw new KernelError(E.EINVAL, 'clone: malformed spec');
  }
  return { module: o.module, args: o.args, ...(o.name !== undefined ? { name: o.name } : {}) };
}

/**
 * Makes the task and orders its worker: the whole of a clone, for the syscall and the control plane alike.
 * Returns the new task's id. ESHUTDOWN once the machine shuts down (no worker could be started any more).
 */
export function cloneTask(k: Kernel, entry: SyscallEntry, spawn: SpawnSink, parent: Task, flags: number, spec: CloneSpec, shuttingDown: () => boolean): number {
  if (shuttingDown()) throw new KernelError(E.ESHUTDOWN);
  const { port1, port2 } = new MessageChannel();
  const thread = flags === CLONE_PTHREAD;
  let t: Task;
  try {
    t = copyProcess(k, parent, flags, (spec.name ?? parent.comm).slice(0, 15), createChannel(), port1);
  } catch (e) {
    port1.close();
    throw e;
  }
  entry.addTask(t);
  spawn({
    kind: 'dmabuf-sim:spawn',
    tid: t.pid,
    tgid: t.tgid,
    thread,
    name: spec.name ?? parent.comm,
    channel: t.channel.sab,
    port: port2,
    module: spec.module,
    args: spec.args,
  });
  return t.pid;
}

/**
 * do_wait for wait4(pid, options): pid > 0 waits for that child, -1 (or 0: the model has one process group) for
 * any. Returns the child's pid with its exit status in RES[1] and forgets it; 0 with WNOHANG while it runs. ECHILD
 * when the caller's group has no such child (never made it, or already waited for it); EINVAL for unknown options
 * or a process group (pid < -1) the model does not have. Blocks in the broker (parked) otherwise.
 */
function sysWait4(_k: Kernel, req: SyscallRequest): number | Blocked {
  // wait4(pid_t upid, int *stat_addr, int options, struct rusage *ru).
  const pid = req.int(0);
  const options = req.int(1);
  if (options & ~WNOHANG) throw new KernelError(E.EINVAL);
  if (pid < -1) throw new KernelError(E.ECHILD);
  const g = req.task.group;
  const reap = (): number | undefined => {
    if (pid > 0) {
      const c = g.children.get(pid);
      if (!c) throw new KernelError(E.ECHILD);
      if (c.status === null) return undefined;
      g.children.delete(pid);
      req.res[1] = c.status;
      return pid;
    }
    if (g.children.size === 0) throw new KernelError(E.ECHILD);
    for (const [cpid, c] of g.children) {
      if (c.status === null) continue;
      g.children.delete(cpid);
      req.res[1] = c.status;
      return cpid;
    }
    return undefined;
  };
  const r = reap();
  if (r !== undefined) return r;
  if (options & WNOHANG) return 0;
  return new Blocked(reap, [g.childExit], -1, () => 0);
}

/** Registers clone and wait4. `spawn` reaches the main thread; `shuttingDown` reads the control block. */
export function registerForkSyscalls(entry: SyscallEntry, spawn: SpawnSink, shuttingDown: () => boolean): void {
  entry.register(SYS.clone, (k, req) => {
    // clone(unsigned long clone_flags, ...).
    const flags = req.ulong(0);
    if (flags !== 0 && flags !== CLONE_PTHREAD) {
      // copy_process's order: CLONE_THREAD needs CLONE_SIGHAND, CLONE_SIGHAND needs CLONE_VM → EINVAL.
      throw new KernelError(E.EINVAL);
    }
    return cloneTask(k, entry, spawn, req.task, flags, parseSpec(req.inputString()), shuttingDown);
  });
  entry.register(SYS.wait4, sysWait4);
}
