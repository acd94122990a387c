/**
 * struct task_struct for the model: one simulated process (a worker thread), its fd table, its mappings and the
 * syscall channel it calls through. Broker thread only.
 */
import type { MessagePort } from 'node:worker_threads';
import type { File } from './file.js';
import { MMAP_BASE, type Vma } from './mm.js';
import { ChannelViews } from '../shm/channel.js';
import { DEFAULT_NOFILE } from '../uapi/posix.js';
import { ioctlName } from '../uapi/names.js';
import type { Blocked } from './wait.js';

export interface FdEntry {
  file: File;
  cloexec: boolean;
}

/** A syscall parked in the broker (see wait.ts). */
export interface Parked {
  readonly blocked: Blocked;
  /** Ends the sleep: unhooks waiters and the timer. */
  cancel(): void;
}

export class Task {
  /** fd table, indexed by fd number. */
  readonly fds: (FdEntry | undefined)[] = [];
  /** RLIMIT_NOFILE soft and hard limits. */
  nofileCur = DEFAULT_NOFILE;
  nofileMax = 4096;
  /** Sorted by start address. */
  readonly vmas: Vma[] = [];
  nextMmapAddr = MMAP_BASE;
  /** regionId → number of this task's VMAs that use it (mirrors the process's SAB handle cache). */
  readonly regionRefs = new Map<number, number>();
  readonly channel: ChannelViews;
  /** Set while a request is being served or parked, so the scanner does not dispatch it twice. */
  inFlight = false;
  parked: Parked | null = null;
  /** Syscalls made so far (for leak origins and diagnostics). */
  syscalls = 0;
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

  constructor(
    readonly pid: number,
    public comm: string,
    channelSab: SharedArrayBuffer,
    /** Where the broker posts SharedArrayBuffer handles for this process. */
    readonly port: MessagePort | null,
  ) {
    this.channel = new ChannelViews(channelSab);
  }

  /** Lowest free fd ≥ minFd below the soft limit, or -1 (EMFILE). */
  lowestFreeFd(minFd = 0): number {
    for (let fd = minFd; fd < this.nofileCur; fd++) if (!this.fds[fd]) return fd;
    return -1;
  }

  getFd(fd: number): FdEntry | undefined {
    return Number.isInteger(fd) && fd >= 0 ? this.fds[fd] : undefined;
  }

  openFdCount(): number {
    let n = 0;
    for (const e of this.fds) if (e) n++;
    return n;
  }
}
