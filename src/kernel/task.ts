/**
 * struct task_struct for the model: one simulated thread of execution (a worker), the fd table, address space and
 * thread group it shares or owns, and the syscall channel it calls through. Broker thread only.
 *
 * What is shared how (see docs/ARCHITECTURE.md "fork and threads"): a process made by Machine.spawn or fork owns a
 * ThreadGroup (tgid, rlimits, children), a FilesStruct and an MmStruct; fork copies the caller's fd table and
 * mapping list into new ones; a thread (clone with CLONE_FILES | CLONE_VM | CLONE_THREAD) points to the caller's
 * three. Each is refcounted by its users and released by its last user's teardown.
 */
import type { MessagePort } from 'node:worker_threads';
import { FilesStruct, type FdEntry } from './fdtable.js';
import { MMAP_BASE, type Vma } from './mm.js';
import { ChannelViews, NARGS } from '../shm/channel.js';
import { DEFAULT_NOFILE } from '../uapi/posix.js';
import { ioctlName } from '../uapi/names.js';
import { WaitQueue, type Blocked } from './wait.js';

export type { FdEntry } from './fdtable.js';

/**
 * struct mm_struct, as far as the model has one: the mapping list and the next synthetic address. Shared by the
 * threads of a process; fork copies it (MAP_SHARED mappings of the same buffer: the same memory). The last user's
 * teardown drops the mappings (exit_mmap).
 */
export class MmStruct {
  users = 1;
  /** Sorted by start address. */
  readonly vmas: Vma[] = [];
  nextMmapAddr = MMAP_BASE;
}

/** A child's state as its parent's wait sees it: running, or ended with `status` and torn down. */
export interface ChildRecord {
  status: number | null;
}

/**
 * The thread group (struct signal_struct plus the parent/child links of the group leader): tgid, RLIMIT_NOFILE
 * (per process, as rlimits are), the children waitpid may wait for, and the queue their ends wake.
 */
export class ThreadGroup {
  /** RLIMIT_NOFILE soft and hard limits. */
  nofileCur = DEFAULT_NOFILE;
  nofileMax = 4096;
  /** Live tasks of the group (the leader and its threads). */
  readonly tasks = new Set<Task>();
  /** Children (forked processes and threads this group made), by pid/tid, until waited for or the group ends. */
  readonly children = new Map<number, ChildRecord>();
  /** Woken when a child's record gets its status (wait_chldexit). */
  readonly childExit = new WaitQueue();

  constructor(
    readonly tgid: number,
    /** The group whose wait sees this group's tasks end; null for processes the main thread made. */
    public parent: ThreadGroup | null,
  ) {}
}

/** A syscall parked in the broker (see wait.ts). */
export interface Parked {
  readonly blocked: Blocked;
  /** Ends the sleep: unhooks waiters and the timer. */
  cancel(): void;
}

export class Task {
  /** The fd table: this task's own, or shared with the threads of its group. */
  files: FilesStruct;
  /** The address space: own after spawn and fork, shared by threads. */
  mm: MmStruct;
  readonly group: ThreadGroup;
  /**
   * regionId → number of mappings this task's worker holds the SAB handle for (mirrors that worker's handle
   * cache). Per task, not per mm: a handle lives in one worker, so a thread receives the handles of the mappings it
   * made itself.
   */
  readonly regionRefs = new Map<number, number>();
  /** The group that may wait for this task (its creator's), null once that group is gone or for spawned ones. */
  parent: ThreadGroup | null = null;
  readonly channel: ChannelViews;
  /**
   * The current request's ARGS as read at dispatch (copy_from_user; see SyscallRequest). One per task, not one per
   * request: a task has at most one call in flight (served or parked), and the next request can only be posted
   * after that call's reply, so the copy cannot be overwritten while a handler or a parked retry still reads it.
   */
  readonly argsCopy = new Float64Array(NARGS);
  /** Set while a request is being served or parked, so the scanner does not dispatch it twice. */
  inFlight = false;
  parked: Parked | null = null;
  /**
   * Releases this task triggered that complete in a driver worker and have not yet (Kernel.asyncRelease): its
   * reap completes only once they settled, as do_exit runs the task's __fput work before exit_notify.
   */
  readonly releases = new Set<Promise<void>>();
  /** Syscalls made so far (for leak origins and diagnostics). */
  syscalls = 0;
  /**
   * The task's owner token in the machine's alive table (its locks and spin slots carry it), set by the control
   * plane once registered; 0 before. sw_sync annotates its timelines' fences with it (the lock watchdog).
   */
  owner = 0;
  private callName = '';
  /** The ioctl cmd being served, or -1: its name is formatted only when someone asks (see currentCall). */
  private callIoctl = -1;

  /**
   * The call currently being served, e.g. "ioctl(DMA_HEAP_IOCTL_ALLOC)" — for leak origins, warnings and oopses.
   * Named lazily: formatting every ioctl's name up front would put a lookup and a string on the syscall path.
   */
  get currentCall(): string {
    return this.callIoctl >= 0 ? `ioctl(${ioctlName(this.callIoctl)})` : this.callName;
  }
  set currentCall(name: string) {
    this.callName = name;
    this.callIoctl = -1;
  }

  /** Marks the call being served as ioctl `cmd`. */
  beginIoctl(cmd: number): void {
    this.callIoctl = cmd;
  }
  state: 'running' | 'dead' = 'running';
  exitCode: number | null = null;

  /**
   * `pid` is the task's own id (Linux's task pid, what gettid returns; the key of Kernel.tasks). `group` is the
   * thread group it joins (a new one for a process: tgid = pid); `files` and `mm` the tables it uses (new ones by
   * default; a thread passes its creator's and the caller has taken the reference).
   */
  constructor(
    readonly pid: number,
    public comm: string,
    channelSab: SharedArrayBuffer,
    /** Where the broker posts SharedArrayBuffer handles for this process. */
    readonly port: MessagePort | null,
    group?: ThreadGroup,
    files?: FilesStruct,
    mm?: MmStruct,
  ) {
    this.channel = new ChannelViews(channelSab);
    this.group = group ?? new ThreadGroup(pid, null);
    this.group.tasks.add(this);
    this.files = files ?? new FilesStruct();
    this.mm = mm ?? new MmStruct();
  }

  /** getpid(): the thread group's id. */
  get tgid(): number {
    return this.group.tgid;
  }
  get nofileCur(): number {
    return this.group.nofileCur;
  }
  set nofileCur(v: number) {
    this.group.nofileCur = v;
  }
  get nofileMax(): number {
    return this.group.nofileMax;
  }
  set nofileMax(v: number) {
    this.group.nofileMax = v;
  }
  /** The mapping list of this task's address space (sorted by start address). */
  get vmas(): Vma[] {
    return this.mm.vmas;
  }
  get nextMmapAddr(): number {
    return this.mm.nextMmapAddr;
  }
  set nextMmapAddr(v: number) {
    this.mm.nextMmapAddr = v;
  }

  /** Lowest free fd ≥ minFd below the soft limit, or -1 (EMFILE). */
  lowestFreeFd(minFd = 0): number {
    return this.files.findFree(minFd, this.nofileCur);
  }

  getFd(fd: number): FdEntry | undefined {
    return this.files.get(fd);
  }

  openFdCount(): number {
    return this.files.count;
  }
}
