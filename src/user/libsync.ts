/**
 * Userspace sync helpers in the style of Android's libsync and the sync selftests' sync.c / sw_sync.h: wait on,
 * merge and inspect sync_file fds, and drive sw_sync timelines. Each builds the real uAPI struct bytes and calls
 * ioctl()/poll() with the real request numbers.
 *
 * Error convention (the C library's, see syscalls.ts): where libsync returns -1 and sets errno, these throw
 * SyscallError with that errno — so syncWait() returns 0 when the fence signaled and throws ETIME on timeout
 * (libsync's `-1, errno = ETIME`), EINVAL for a negative or closed fd. The *_is_valid helpers return booleans and
 * the *_destroy helpers never throw, as in sw_sync.h.
 */
import { SyscallError } from '../errors.js';
import { E } from '../uapi/errno.js';
import { F_GETFD, O_RDWR, POLLERR, POLLIN, POLLNVAL } from '../uapi/posix.js';
import {
  SW_SYNC_DEBUGFS_PATH,
  SW_SYNC_GET_DEADLINE,
  SW_SYNC_IOC_CREATE_FENCE,
  SW_SYNC_IOC_INC,
  SYNC_FILE_INFO_ARRAY_OFFSET,
  SYNC_IOC_FILE_INFO,
  SYNC_IOC_MERGE,
  SYNC_IOC_SET_DEADLINE,
  SYNC_NAME_LEN,
  type SyncFenceInfo,
  readSyncFenceInfo,
  readSyncName,
  sw_sync_create_fence_data,
  sw_sync_get_deadline,
  sync_fence_info,
  sync_file_info,
  sync_merge_data,
  sync_set_deadline,
} from '../uapi/sync-file.js';
import { SYS } from '../shm/channel.js';
import {
  type FenceRuntime,
  MAX_SCHEDULE_TIMEOUT,
  attachFenceTable,
  dmaFenceFromHandle,
  dmaFenceWaitTimeout,
  dmaFenceMightWait,
} from '../fence/index.js';
import { rt } from './runtime.js';
import { close, fcntl, ioctl, open, poll } from './syscalls.js';
import { validateFd, validateFlags, validateInt, validateOneOf, validateString, validateTimeout, validateU64 } from '../validate.js';

/** Writes `name` as a char[32] field: at most 31 bytes (strncpy(…, sizeof − 1) then a NUL), the rest zero. */
function putName(bytes: Uint8Array, off: number, name: string): void {
  const b = Buffer.from(name, 'latin1').subarray(0, SYNC_NAME_LEN - 1);
  bytes.fill(0, off, off + SYNC_NAME_LEN);
  bytes.set(b, off);
}

/** How syncWait waits: 'poll' is libsync's poll(2); 'fence' the fast path on the fence word (see syncWait). */
export type SyncWaitMode = 'poll' | 'fence';

let waitMode: SyncWaitMode = process.env['DMABUF_SIM_SYNC_WAIT'] === 'poll' ? 'poll' : 'fence';
let fenceRt: FenceRuntime | null | undefined;

/** Chooses how syncWait waits in this process (both give the same results; see syncWait). */
export function setSyncWaitMode(mode: SyncWaitMode): void {
  waitMode = validateOneOf(mode, 'mode', ['poll', 'fence']);
}

export function syncWaitMode(): SyncWaitMode {
  return waitMode;
}

/** This process's attachment to the machine's fence table, made on first use (null if the machine has none). */
function processFenceRuntime(): FenceRuntime | null {
  if (fenceRt === undefined) {
    const r = rt();
    const sab = r.fences;
    // Sharing the machine control block puts fence-wait spinners under the same vCPUs − 1 budget as syscall
    // spinners (a waiter never spins while that would starve the broker or the process it waits for).
    fenceRt = sab ? attachFenceTable(sab, r.fenceAttachOptions()) : null;
  }
  return fenceRt;
}

/** libsync's sync_wait result for a poll(2) outcome: 0 when ready, else ETIME / EINVAL. `timeoutMs` is validated. */
function pollWait(fd: number, timeoutMs: number): number {
  const fds = [{ fd, events: POLLIN, revents: 0 }];
  const ret = poll(fds, timeoutMs);
  if (ret > 0) {
    if (fds[0]!.revents & (POLLERR | POLLNVAL)) throw new SyscallError(E.EINVAL, 'sync_wait');
    return 0;
  }
  throw new SyscallError(E.ETIME, 'sync_wait');
}

/**
 * sync_wait(fd, timeout): waits until the fence of sync_file `fd` signals, for at most `timeoutMs` (0: just look;
 * negative, Infinity or ≥ 2^31 ms — more than a C int holds: forever, in both modes). Returns 0 once signaled — an errored fence counts as signaled (poll gives POLLIN; read its status
 * with syncFileInfo). Throws SyscallError ETIME on timeout, EINVAL for fd < 0 or a closed fd (POLLNVAL), and
 * whatever poll() itself fails with.
 *
 * Two ways to wait, same results:
 *   - 'poll': libsync's loop — one poll(2), parked in the kernel until the sync_file's fence callback wakes it.
 *   - 'fence' (default): a vDSO-style fast path. One short lookup call (SYS.sync_file_fence) gives the fence's
 *     slot in the shared fence table; the process then waits on the fence word itself (dma_fence_wait_timeout in
 *     this worker: a bounded spin within the machine's spinner budget, then Atomics.wait), woken directly by
 *     the signal. It keeps long waits out of the syscall channel, whose adaptive spin is tuned for short calls
 *     (a parked poll always outlasts the spin and teaches the channel to stop spinning for every later call);
 *     measured 2–3× the poll path's handoff rate in bench/sync.ts. The fd keeps the fence alive throughout (this
 *     process cannot close it while it waits here). Anything that is not an open sync_file goes through the poll
 *     path, so errors and non-fence fds behave exactly as there.
 * The mode is per process: setSyncWaitMode(), or DMABUF_SIM_SYNC_WAIT=poll in the environment for every process.
 */
export function syncWait(fd: number, timeoutMs: number): number {
  validateFd(fd);
  const timeout = validateTimeout(timeoutMs, 'timeout');
  if (fd < 0) throw new SyscallError(E.EINVAL, 'sync_wait');
  // Lock validation (issue 8): every sync_wait is an annotated fence wait, whatever path it takes and whatever
  // the timeout (0 too) — a no-op unless the process attached a lock domain (Machine.boot({ lockdep: true })).
  dmaFenceMightWait();
  if (waitMode === 'fence') {
    const frt = processFenceRuntime();
    if (frt) {
      const r = rt();
      const state = r.call(SYS.sync_file_fence, fd, 0, 0, 0, 0, 0, undefined, 'sync_wait');
      if (state === 2) return 0;
      if (state === 1) {
        const f = dmaFenceFromHandle({ index: r.ch.res[1]!, gen: r.ch.res[2]! }, frt);
        const ret = dmaFenceWaitTimeout(f, true, timeout < 0 ? MAX_SCHEDULE_TIMEOUT : timeout);
        if (ret > 0) return 0;
        if (ret === 0) throw new SyscallError(E.ETIME, 'sync_wait');
        throw new SyscallError(-ret, 'sync_wait');
      }
    }
  }
  return pollWait(fd, timeout);
}

/**
 * sync_merge(name, fd1, fd2): SYNC_IOC_MERGE. Returns the new sync_file fd (O_CLOEXEC) standing for both fences;
 * both inputs stay valid. Throws ENOENT when fd2 is not a sync_file, ENOTTY when fd1 is not, EBADF when fd1 is
 * not open, EMFILE when the fd table is full.
 */
export function syncMerge(name: string, fd1: number, fd2: number): number {
  validateString(name, 'name');
  validateFd(fd1, 'fd1');
  validateFd(fd2, 'fd2');
  const d = sync_merge_data;
  const bytes = new Uint8Array(d.SIZE);
  const dv = new DataView(bytes.buffer);
  putName(bytes, d.name, name);
  dv.setInt32(d.fd2, fd2, true);
  ioctl(fd1, SYNC_IOC_MERGE, bytes);
  return dv.getInt32(d.fence, true);
}

/** struct sync_file_info with its sync_fence_info array, decoded. */
export interface SyncFileInfo {
  /** The sync_file's name: the merge name, or "<driver>-<timeline><context>-<seqno>" (≤ 31 chars). */
  readonly name: string;
  /** Aggregate status: the first component status ≤ 0 (in order), else 1. */
  readonly status: number;
  readonly flags: number;
  readonly numFences: number;
  /** One entry per component fence (a merge's leaves, in the kernel's unwrap order). */
  readonly fences: readonly SyncFenceInfo[];
}

/**
 * One SYNC_IOC_FILE_INFO call with room for `room` fence infos. The argument buffer is the struct followed by the
 * array, and `sync_fence_info` is the array's byte offset in it — the model's user pointer (src/uapi/sync-file.ts).
 */
function fileInfoCall(fd: number, room: number): { dv: DataView; bytes: Uint8Array } {
  const s = sync_file_info;
  const bytes = new Uint8Array(SYNC_FILE_INFO_ARRAY_OFFSET + room * sync_fence_info.SIZE);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(s.num_fences, room, true);
  dv.setBigUint64(s.sync_fence_info, room > 0 ? BigInt(SYNC_FILE_INFO_ARRAY_OFFSET) : 0n, true);
  ioctl(fd, SYNC_IOC_FILE_INFO, bytes);
  return { dv, bytes };
}

/**
 * sync_file_info(fd): two SYNC_IOC_FILE_INFO calls as libsync makes them — the first (num_fences 0) learns the
 * count, the second fetches every sync_fence_info. The status is the second call's aggregate (first component
 * ≤ 0, else 1); with no components it is the first call's container status. Throws ENOTTY for a file that is not a
 * sync_file, EBADF for a closed fd.
 */
export function syncFileInfo(fd: number): SyncFileInfo {
  validateFd(fd);
  const s = sync_file_info;
  const first = fileInfoCall(fd, 0);
  const n = first.dv.getUint32(s.num_fences, true);
  const { dv } = n > 0 ? fileInfoCall(fd, n) : first;
  const numFences = dv.getUint32(s.num_fences, true);
  const fences: SyncFenceInfo[] = [];
  if (n > 0) {
    for (let i = 0; i < numFences; i++) fences.push(readSyncFenceInfo(dv, SYNC_FILE_INFO_ARRAY_OFFSET + i * sync_fence_info.SIZE));
  }
  return {
    name: readSyncName(dv, s.name),
    status: dv.getInt32(s.status, true),
    flags: dv.getUint32(s.flags, true),
    numFences,
    fences,
  };
}

/** sync_fence_size(fd): the number of component fences. */
export function syncFenceSize(fd: number): number {
  validateFd(fd);
  return syncFileInfo(fd).numFences;
}

/**
 * sync_fence_count_with_status(fd, status): how many components have exactly `status` (FENCE_STATUS_ACTIVE 0,
 * FENCE_STATUS_SIGNALED 1; errors are −errno, so FENCE_STATUS_ERROR (−1) only matches −EPERM, as in C).
 */
export function syncFenceCountWithStatus(fd: number, status: number): number {
  validateFd(fd);
  validateInt(status, 'status');
  let n = 0;
  for (const f of syncFileInfo(fd).fences) if (f.status === status) n++;
  return n;
}

/** SYNC_IOC_SET_DEADLINE: asks the fence's signaller to be done by `deadlineNs` (machine clock, ns). */
export function syncSetDeadline(fd: number, deadlineNs: number | bigint): number {
  validateFd(fd);
  const deadline = validateU64(deadlineNs, 'deadlineNs');
  const d = sync_set_deadline;
  const dv = new DataView(new ArrayBuffer(d.SIZE));
  dv.setBigUint64(d.deadline_ns, deadline, true);
  return ioctl(fd, SYNC_IOC_SET_DEADLINE, dv);
}

/** sw_sync_timeline_create(): opens the sw_sync device — a new timeline (value 0) named after this process. */
export function swSyncTimelineCreate(): number {
  return open(SW_SYNC_DEBUGFS_PATH, O_RDWR);
}

/** sw_sync_timeline_inc(fd, count): SW_SYNC_IOC_INC — advances the timeline by `count` (a u32), signaling points. */
export function swSyncTimelineInc(fd: number, count: number): number {
  validateFd(fd);
  const inc = validateFlags(count, 'count');
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, inc >>> 0, true);
  return ioctl(fd, SW_SYNC_IOC_INC, dv);
}

/**
 * sw_sync_fence_create(fd, name, value): SW_SYNC_IOC_CREATE_FENCE — a sync_file fd (O_CLOEXEC) for the point at
 * `value` (a u32) on timeline `fd`. The kernel ignores `name`.
 */
export function swSyncFenceCreate(fd: number, name: string, value: number): number {
  validateFd(fd);
  validateString(name, 'name');
  validateFlags(value, 'value');
  const d = sw_sync_create_fence_data;
  const bytes = new Uint8Array(d.SIZE);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(d.value, value >>> 0, true);
  putName(bytes, d.name, name);
  ioctl(fd, SW_SYNC_IOC_CREATE_FENCE, bytes);
  return dv.getInt32(d.fence, true);
}

/** SW_SYNC_GET_DEADLINE: the earliest deadline (ns) set on the sw_sync point behind `fenceFd` (ENOENT if none). */
export function swSyncGetDeadline(timelineFd: number, fenceFd: number): bigint {
  validateFd(timelineFd, 'timelineFd');
  validateFd(fenceFd, 'fenceFd');
  const d = sw_sync_get_deadline;
  const dv = new DataView(new ArrayBuffer(d.SIZE));
  dv.setInt32(d.fence_fd, fenceFd, true);
  ioctl(timelineFd, SW_SYNC_GET_DEADLINE, dv);
  return dv.getBigUint64(d.deadline_ns, true);
}

/** sw_sync_timeline_is_valid(fd): fd ≠ −1 and open (fcntl(F_GETFD) succeeds). */
export function swSyncTimelineIsValid(fd: number): boolean {
  validateFd(fd);
  if (fd === -1) return false;
  try {
    return fcntl(fd, F_GETFD, 0) >= 0;
  } catch (e) {
    if (e instanceof SyscallError) return false;
    throw e;
  }
}

/** sw_sync_timeline_destroy(fd): closes it if valid. */
export function swSyncTimelineDestroy(fd: number): void {
  if (swSyncTimelineIsValid(fd)) close(fd);
}

/** sw_sync_fence_is_valid(fd): the same check ("Same code!"). */
export function swSyncFenceIsValid(fd: number): boolean {
  return swSyncTimelineIsValid(fd);
}

/** sw_sync_fence_destroy(fd): closes it if valid. */
export function swSyncFenceDestroy(fd: number): void {
  if (swSyncFenceIsValid(fd)) close(fd);
}
