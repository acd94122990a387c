/**
 * struct file and struct file_operations: the open-file object every fd, mapping and in-flight message points at.
 *
 * Locking: broker thread only. Lifetime: `count` is f_count; `kernel.fget`/`fput` move it, the last put runs
 * `ops.release`. Nothing is released by garbage collection.
 */
import type { UserPtr } from './uaccess.js';
import type { Task } from './task.js';
import type { FilesStruct } from './fdtable.js';
import type { Vma } from './mm.js';
import type { WaitQueue } from './wait.js';
import type { SyscallOutcome } from './wait.js';
import { O_ACCMODE, O_RDONLY, O_RDWR, O_WRONLY } from '../uapi/posix.js';

export const FMODE_READ = 1;
export const FMODE_WRITE = 2;
export const FMODE_LSEEK = 4;

/** Mode bits an open with these flags grants (O_RDONLY → read, O_WRONLY → write, O_RDWR → both). */
export function fmodeFromFlags(flags: number): number {
  switch (flags & O_ACCMODE) {
    case O_RDONLY:
      return FMODE_READ;
    case O_WRONLY:
      return FMODE_WRITE;
    case O_RDWR:
      return FMODE_READ | FMODE_WRITE;
    default:
      return 0;
  }
}

/** poll_table: lets a file's poll op register the caller on the queues that will signal a change. */
export interface PollTable {
  wait(q: WaitQueue): void;
  /**
   * poll_table._key: the events the caller asked for (poll(2) passes pollfd.events | POLLERR | POLLHUP). Absent
   * means "everything", as for a NULL table. Read it with pollRequestedEvents().
   */
  readonly key?: number;
}

/** poll_requested_events(pt): the events the poller asked for; every event (~0) without a table or a key. */
export function pollRequestedEvents(pt: PollTable | null): number {
  return pt && pt.key !== undefined ? pt.key : ~0;
}

/** The call context a file op runs in: which task made the syscall (for fd installation, credentials...). */
export interface CallContext {
  readonly task: Task;
}

export interface FileOperations {
  /** Name of the file type for diagnostics ("dmabuf", "sync_file", "socket"...). */
  readonly kind: string;
  /** The path readlink(/proc/self/fd/N) shows (d_path / dname). */
  dname(f: File): string;
  ioctl?(f: File, cmd: number, arg: UserPtr, ctx: CallContext): SyscallOutcome;
  /** Sets vma.region; a file served by another worker (a driver) answers with a promise (the mmap parks). */
  mmap?(f: File, vma: Vma): void | Promise<void>;
  poll?(f: File, pt: PollTable | null): number;
  /**
   * A file whose poll state lives in another worker (a driver's device): the promise settles once its mask is
   * fresh, and poll(2) waits for it before its first pass. Absent for in-broker files.
   */
  pollPrepare?(f: File): Promise<void>;
  llseek?(f: File, offset: number, whence: number): number;
  read?(f: File, count: number, ctx: CallContext): Uint8Array | SyscallOutcome;
  /**
   * write(2): `data` is what the syscall channel carried (at most 64 KiB), `len` the count the caller asked for
   * (≥ data.length): a stream may write what arrived (a short write), a datagram larger than `data` is EMSGSIZE.
   */
  write?(f: File, data: Uint8Array, ctx: CallContext, len: number): SyscallOutcome;
  /** Extra fdinfo lines after the generic pos/flags/mnt_id/ino block (show_fdinfo). */
  showFdinfo?(f: File): string;
  /**
   * filp_close's f_op->flush: an fd pointing at the file was removed from fd table `files` (close, dup2/dup3 over
   * it, the table's last user exiting) — the file may live on through other fds. Broker thread, inside the call
   * that removed the fd, before it returns; must not throw or sleep.
   */
  flush?(f: File, files: FilesStruct): void;
  /** Last reference dropped. */
  release?(f: File): void;
}

export class File<P = unknown> {
  /** f_count. */
  count = 1;
  /** f_pos. */
  pos = 0;
  constructor(
    readonly ops: FileOperations,
    public privateData: P,
    /** FMODE_* bits. */
    public fmode: number,
    /** f_flags: O_* status flags (O_CLOEXEC is per fd, not stored here). */
    public flags: number,
    readonly ino: number,
    /** Leak-tracker id (see leaks.ts). */
    public trackId = 0,
  ) {}
}
