/**
 * sync_file (drivers/dma-buf/sync_file.c): the anon-inode file that carries one dma_fence to userspace — created
 * by drivers (sw_sync, dma-buf's EXPORT_SYNC_FILE), merged and inspected with SYNC_IOC_*, polled for completion.
 *
 * Threads: everything here runs on the broker thread (file ops, ioctls, the kernel API). The fence itself lives in
 * the shared fence table and may be signaled by any worker; the poll callback is registered in the broker, which is
 * attached with `eventLoop: true`, so it runs promptly wherever the signal happened (see dma-fence.ts).
 *
 * Lifetimes: a sync_file holds exactly one fence reference (taken at creation, put at release). Files move with
 * kernel.fget/fput like every other file; nothing is left to the garbage collector.
 */
import { ModuleState } from './module-state.js';
import { BUG } from '../bug.js';
import { KernelError } from '../errors.js';
import { SYS } from '../shm/channel.js';
import { FenceTableFullError } from '../fence/table.js';
import { ResvTableFullError } from '../fence/resv-table.js';
import { E } from '../uapi/errno.js';
import { O_RDONLY, POLLIN } from '../uapi/posix.js';
import {
  SYNC_IOC_FILE_INFO,
  SYNC_IOC_MERGE,
  SYNC_IOC_SET_DEADLINE,
  SYNC_NAME_LEN,
  sync_fence_info,
  sync_file_info,
  sync_merge_data,
  sync_set_deadline,
} from '../uapi/sync-file.js';
import {
  type DmaFence,
  DmaFenceCb,
  dmaFenceAddCallback,
  dmaFenceGet,
  dmaFenceGetStatus,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceRemoveCallback,
  dmaFenceSetDeadline,
  dmaFenceTimestamp,
  dmaFenceUnwrapForEach,
  dmaFenceUnwrapMerge,
} from '../fence/index.js';
import { fmodeFromFlags, type File, type FileOperations, type PollTable } from './file.js';
import type { SyscallEntry } from './entry.js';
import type { Kernel } from './kernel.js';
import type { Task } from './task.js';
import type { UserPtr } from './uaccess.js';
import { WaitQueue } from './wait.js';

/** struct sync_file: the fence, the name given at merge (or ''), the poll wait queue and its fence callback. */
export interface SyncFile {
  readonly k: Kernel;
  readonly fence: DmaFence;
  /** user_name: set by SYNC_IOC_MERGE; '' means "derive the name from the fence" (sync_file_get_name). */
  readonly userName: string;
  readonly wq: WaitQueue;
  readonly cb: DmaFenceCb;
  /** POLL_ENABLED: the callback was added (once, by the first poll). */
  pollEnabled: boolean;
}

const anonInode = new ModuleState<number>('anon_inode');

/** The one inode every anon_inode_getfile() file shares (anon_inode_inode), allocated on first use. */
export function anonInodeIno(k: Kernel): number {
  return anonInode.ofOrInit(k, () => k.getNextIno());
}


/** fence_check_cb_func: the fence signaled — wake every poller (runs in the broker, see the file comment). */
function fenceCheckCb(sf: SyncFile): void {
  sf.wq.wake();
}

const syncFileOps: FileOperations = {
  kind: 'sync_file',
  dname: () => 'anon_inode:sync_file',
  ioctl: (f, cmd, arg, ctx) => syncFileIoctl(f as File<SyncFile>, cmd, arg, ctx.task),
  poll: (f, pt) => syncFilePoll(f as File<SyncFile>, pt),
  release: (f) => syncFileRelease(f as File<SyncFile>),
  // sync_file.c has no show_fdinfo: /proc/<pid>/fdinfo shows only the generic block.
};

/** True for sync_file files (file->f_op == &sync_file_fops). */
export function isSyncFile(f: File): f is File<SyncFile> {
  return f.ops === syncFileOps;
}

/** sync_file_alloc + fence: a new sync_file with one file reference, owning `fence` (the caller's reference). */
function syncFileAlloc(k: Kernel, fence: DmaFence, userName: string): File<SyncFile> {
  const sf: SyncFile = { k, fence, userName, wq: new WaitQueue(), cb: new DmaFenceCb(), pollEnabled: false };
  // anon_inode_getfile("sync_file", &sync_file_fops, sync_file, 0): O_RDONLY, the shared anon inode.
  return k.allocFile<SyncFile>(syncFileOps, sf, fmodeFromFlags(O_RDONLY), O_RDONLY, anonInodeIno(k));
}

/**
 * sync_file_create(fence): a sync_file containing `fence`. Takes its own fence reference (the caller keeps its
 * one) and unwraps nothing. Returns the new file with one reference: install it (k.installFd) or fput it.
 */
export function syncFileCreate(k: Kernel, fence: DmaFence): File<SyncFile> {
  return syncFileAlloc(k, dmaFenceGet(fence), '');
}

/**
 * Runs a fence-table allocation, turning "table full" into the -ENOMEM the kernel's kmalloc failure gives. Shared
 * by the drivers that make fences for userspace (sync_file merge, sw_sync points, dma-buf EXPORT_SYNC_FILE).
 */
export function allocOrEnomem<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof FenceTableFullError || e instanceof ResvTableFullError) throw new KernelError(E.ENOMEM, e.message);
    throw e;
  }
}

/** fd_install of a new sync_file at the lowest free fd of `task`; on failure the file is put (nothing leaks). */
function syncFileInstallFile(k: Kernel, task: Task, file: File<SyncFile>, cloexec: boolean): number {
  try {
    return k.installFd(task, file, cloexec);
  } catch (e) {
    k.fput(file);
    throw e;
  }
}

/**
 * sync_file_fdget: the sync_file behind `fd` of `task`, or null (bad fd, or not a sync_file). Borrowed: the fd
 * table keeps the file alive for the duration of the syscall.
 */
export function syncFileFdget(_k: Kernel, task: Task, fd: number): File<SyncFile> | null {
  const e = task.getFd(fd);
  return e && isSyncFile(e.file) ? e.file : null;
}

/**
 * sync_file_get_fence(fd): a new reference to the fence of the sync_file at `fd`, or null when `fd` is not open
 * or not a sync_file. Callers choose their errno (IMPORT_SYNC_FILE: EINVAL; SW_SYNC_GET_DEADLINE: EINVAL).
 */
export function syncFileGetFence(k: Kernel, task: Task, fd: number): DmaFence | null {
  const f = syncFileFdget(k, task, fd);
  return f ? dmaFenceGet(f.privateData.fence) : null;
}

/**
 * sync_file_get_name: the user-given name, or `<driver>-<timeline><context>-<seqno>` (seqno printed as a signed
 * 64-bit value, like the C "%lld"), cut to `len − 1` characters as snprintf/strscpy into char[len] do.
 */
export function syncFileGetName(sf: SyncFile, len: number = SYNC_NAME_LEN): string {
  if (sf.userName !== '') return sf.userName.slice(0, len - 1);
  const f = sf.fence;
  const name = `${f.driverName}-${f.timelineName}${f.context}-${BigInt.asIntN(64, f.seqno)}`;
  return name.slice(0, len - 1);
}

/** The sync_file's name (for diagnostics and the dma-buf side), as SYNC_IOC_FILE_INFO reports it. */
export function syncFileName(f: File): string {
  if (!isSyncFile(f)) BUG('syncFileName on a file that is not a sync_file');
  return syncFileGetName(f.privateData);
}

/**
 * sync_file_release: drops the poll callback if one was added, then the fence reference. If the fence signaled
 * meanwhile, dma_fence_remove_callback runs this worker's due callbacks on it now — waking a queue nobody waits
 * on any more (a poller holds an fd, hence the file, for as long as it sleeps).
 */
function syncFileRelease(f: File<SyncFile>): void {
  const sf = f.privateData;
  if (sf.pollEnabled) dmaFenceRemoveCallback(sf.fence, sf.cb);
  dmaFencePut(sf.fence);
}

/**
 * sync_file_poll: registers the poller on the file's wait queue; the first poll adds the fence callback that
 * wakes it (if the fence is signaled already, add_callback fails and the queue is woken at once). EPOLLIN when
 * the fence is signaled — with or without an error (never EPOLLERR), never EPOLLOUT.
 */
function syncFilePoll(f: File<SyncFile>, pt: PollTable | null): number {
  const sf = f.privateData;
  pt?.wait(sf.wq);
  if (!sf.pollEnabled) {
    sf.pollEnabled = true;
    if (dmaFenceAddCallback(sf.fence, sf.cb, () => fenceCheckCb(sf)) < 0) sf.wq.wake();
  }
  return dmaFenceIsSignaled(sf.fence) ? POLLIN : 0;
}

function syncFileIoctl(f: File<SyncFile>, cmd: number, arg: UserPtr, task: Task): number {
  switch (cmd) {
    case SYNC_IOC_MERGE:
      return syncFileIoctlMerge(f.privateData, arg, task);
    case SYNC_IOC_FILE_INFO:
      return syncFileIoctlFenceInfo(f.privateData, arg);
    case SYNC_IOC_SET_DEADLINE:
      return syncFileIoctlSetDeadline(f.privateData, arg);
    default:
      throw new KernelError(E.ENOTTY);
  }
}

/**
 * SYNC_IOC_MERGE: a new sync_file (fd O_CLOEXEC, returned in data.fence) whose fence is
 * dma_fence_unwrap_merge(this, fd2's) and whose name is data.name. Errors in the C order: no free fd → EMFILE
 * (get_unused_fd_flags comes first); short buffer → EFAULT; flags or pad set → EINVAL; fd2 not a sync_file (or
 * not open) → ENOENT; fence table full → ENOMEM. fd2 may be this very fd. Both inputs stay valid.
 */
function syncFileIoctlMerge(sf: SyncFile, arg: UserPtr, task: Task): number {
  const k = sf.k;
  const d = sync_merge_data;
  if (task.lowestFreeFd() < 0) throw new KernelError(E.EMFILE);
  arg.copyFrom(d.SIZE);
  if (arg.u32(d.flags) || arg.u32(d.pad)) throw new KernelError(E.EINVAL);
  const f2 = syncFileFdget(k, task, arg.i32(d.fd2));
  if (!f2) throw new KernelError(E.ENOENT);
  // data.name[sizeof(data.name) - 1] = '\0': at most 31 characters.
  const name = arg.cstring(d.name, SYNC_NAME_LEN - 1);
  const fence = allocOrEnomem(() => dmaFenceUnwrapMerge(sf.fence, f2.privateData.fence));
  if (!fence) throw new KernelError(E.ENOMEM);
  const fd = syncFileInstallFile(k, task, syncFileAlloc(k, fence, name), true);
  arg.setI32(d.fence, fd);
  return 0;
}

/**
 * sync_fill_fence_info: one sync_fence_info at byte `off` of the user buffer — timeline and driver names, status
 * (0 / 1 / −errno) and the signal timestamp (0 while pending). flags stay 0. Returns the status.
 */
function fillFenceInfo(fence: DmaFence, out: DataView, off: number): number {
  const i = sync_fence_info;
  const bytes = new Uint8Array(out.buffer, out.byteOffset + off, i.SIZE);
  bytes.fill(0);
  bytes.set(Buffer.from(fence.timelineName.slice(0, SYNC_NAME_LEN - 1), 'latin1'), i.obj_name);
  bytes.set(Buffer.from(fence.driverName.slice(0, SYNC_NAME_LEN - 1), 'latin1'), i.driver_name);
  const status = dmaFenceGetStatus(fence);
  out.setInt32(off + i.status, status, true);
  const ts = dmaFenceIsSignaled(fence) ? BigInt(Math.round(dmaFenceTimestamp(fence))) : 0n;
  out.setBigUint64(off + i.timestamp_ns, BigInt.asUintN(64, ts), true);
  return status;
}

/**
 * SYNC_IOC_FILE_INFO. flags or pad set → EINVAL. num_fences == 0: only the leaf count and the fence's status
 * (dma_fence_get_status of the container). num_fences < leaves → EINVAL. Otherwise one sync_fence_info per leaf
 * (dma_fence_unwrap order) at the user pointer `sync_fence_info` — in this model a byte offset into the argument
 * buffer (see src/uapi/sync-file.ts); 0 or an array running off the buffer → EFAULT — and the aggregate status:
 * the first leaf status ≤ 0 in that order, else 1. Then name and num_fences (the real count) are written back.
 */
function syncFileIoctlFenceInfo(sf: SyncFile, arg: UserPtr): number {
  const s = sync_file_info;
  arg.copyFrom(s.SIZE);
  if (arg.u32(s.flags) || arg.u32(s.pad)) throw new KernelError(E.EINVAL);
  let numFences = 0;
  for (const _ of dmaFenceUnwrapForEach(sf.fence)) ++numFences;
  let status: number;
  const want = arg.u32(s.num_fences);
  if (want === 0) {
    status = dmaFenceGetStatus(sf.fence);
  } else {
    status = 1;
    if (want < numFences) throw new KernelError(E.EINVAL);
    // copy_to_user(u64_to_user_ptr(info.sync_fence_info), fence_info, size): checked before anything is written.
    const ptr = arg.u64big(s.sync_fence_info);
    const size = numFences * sync_fence_info.SIZE;
    const bytes = arg.bytes!;
    if (numFences > 0 && (ptr === 0n || ptr + BigInt(size) > BigInt(bytes.length))) throw new KernelError(E.EFAULT);
    const out = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let n = 0;
    for (const fence of dmaFenceUnwrapForEach(sf.fence)) {
      if (n === numFences) break; // the set cannot grow, but never write past what was checked
      const st = fillFenceInfo(fence, out, Number(ptr) + n * sync_fence_info.SIZE);
      n++;
      status = status <= 0 ? status : st;
    }
  }
  arg.setCstring(s.name, SYNC_NAME_LEN, syncFileGetName(sf));
  arg.setI32(s.status, status);
  arg.setU32(s.num_fences, numFences);
  return 0;
}

/** SYNC_IOC_SET_DEADLINE: pad set → EINVAL; else dma_fence_set_deadline(fence, deadline_ns) (a no-op once signaled). */
function syncFileIoctlSetDeadline(sf: SyncFile, arg: UserPtr): number {
  const d = sync_set_deadline;
  arg.copyFrom(d.SIZE);
  if (arg.u64big(d.pad) !== 0n) throw new KernelError(E.EINVAL);
  // ns_to_ktime(u64): ktime_t is s64.
  dmaFenceSetDeadline(sf.fence, Number(BigInt.asIntN(64, arg.u64big(d.deadline_ns))));
  return 0;
}

/**
 * Installs a new sync_file for `fence` at the lowest free fd of `task` (O_CLOEXEC if asked): the common tail of
 * the drivers that hand out sync_files (sw_sync CREATE_FENCE, dma-buf EXPORT_SYNC_FILE). Takes its own fence
 * reference. EMFILE when the table is full (nothing is leaked).
 */
export function syncFileInstall(k: Kernel, task: Task, fence: DmaFence, cloexec: boolean = true): number {
  if (task.lowestFreeFd() < 0) throw new KernelError(E.EMFILE);
  return syncFileInstallFile(k, task, syncFileCreate(k, fence), cloexec);
}

/**
 * The model's vDSO data lookup (SYS.sync_file_fence, not a Linux syscall): for libsync's syncWait fast path, the
 * fence-table handle of the sync_file at fd ARGS[0] — RES[1] slot index, RES[2] generation — so the process can
 * wait on the fence word itself instead of parking a poll(2) here. Returns 2 when the fence is signaled already
 * (evaluated here, where the drivers' ops->signaled hooks live), 1 when pending, 0 when the fd is not an open
 * sync_file (the caller then uses poll(2), which gives the real errno behaviour). Never fails.
 *
 * Lifetime: no reference is handed out. The handle stays valid while the caller's fd stays open, and a process
 * is single-threaded: while it waits in syncWait it cannot close that fd (if it dies, its wait dies with it).
 */
export function registerSyncFileSyscalls(entry: SyscallEntry): void {
  entry.register(SYS.sync_file_fence, (k, req) => {
    const f = syncFileFdget(k, req.task, req.fd(0));
    if (!f) return 0;
    const fence = f.privateData.fence;
    req.res[1] = fence.index;
    req.res[2] = fence.gen;
    return dmaFenceIsSignaled(fence) ? 2 : 1;
  });
}
