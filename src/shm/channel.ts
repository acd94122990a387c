/**
 * The syscall channel: one SharedArrayBuffer per process through which it calls into the broker (the kernel).
 *
 * Layout (byte offsets; every Int32 word is accessed with Atomics where another thread races on it):
 *
 *   0   i32 STATE       IDLE → REQUEST (process) → REPLY (broker) → IDLE (process)
 *   4   i32 SEQ         request sequence number, stamped by the process; port messages carry it
 *   8   i32 OP          syscall number (SYS below)
 *   12  i32 ERRNO       0, or the positive errno of a failed call (reply)
 *   16  i32 IN_LEN      bytes of DATA the request carries (paths, ioctl structs, message bytes)
 *   20  i32 OUT_LEN     bytes of DATA the reply carries back (copy_to_user)
 *   24  i32 RFLAGS      reply flags: RF_PORT_MSG = SharedArrayBuffer handles were posted on the process's port;
 *                       RF_ELSEWHERE = set while the call runs, by the broker, when the call waits for another
 *                       worker (a driver's file op): a hint to stop spinning (see Runtime.waitReply);
 *                       RF_LANE = the reply of an ioctl on a driver file carries the task's lane grant for that
 *                       file in RES[4..7] (src/shm/driver-lane.ts)
 *   28  i32 STACK_LEN   see STACK below
 *   32  i32 SHUTDOWN    0, then SHUTDOWN_BEGUN once the machine shuts down (written by the kernel in every
 *                       channel), or SHUTDOWN_KERNEL_GONE once the broker worker exited (written by the main
 *                       thread): the process's calls fail with ESHUTDOWN. Per channel, so a process can only stop
 *                       itself.
 *   64  f64 ARGS[8]     numeric arguments (f64 so 53-bit offsets and sizes are exact)
 *   128 f64 RES[8]      numeric results; RES[0] is the syscall's return value; with RF_LANE, RES[4] the driver
 *                       id, RES[5] the driver's file id, RES[6] the grant token, RES[7] its serial
 *   256 u8  DATA[64 KiB]
 *   256+64K u8 STACK[4 KiB] the caller's JavaScript stack (UTF-8), written only when the machine records stacks;
 *               STACK_LEN (i32 word 7) is its length, 0 when absent
 *
 * Trust: the process may write every word at any time (it is the process's memory too). The kernel copies ARGS and
 * reads OP, IN_LEN, SEQ and STACK_LEN once per request and checks them (an unknown OP is ENOSYS, an IN_LEN outside
 * DATA is EFAULT, a STACK_LEN beyond STACK is clamped), so whatever a process writes here fails its own call at
 * worst — never another process's call, never the broker.
 *
 * Ordering: the process writes OP/ARGS/DATA with plain stores, then `Atomics.store(STATE, REQUEST)`; the broker
 * reads STATE with `Atomics.load` before reading anything else. Atomics are sequentially consistent, so the plain
 * stores before the release-store are visible after the load that observes it. The reply is published the same way
 * in the other direction (broker writes RES/DATA, then stores REPLY).
 */

export const STATE = 0;
export const SEQ = 1;
export const OP = 2;
export const ERRNO = 3;
export const IN_LEN = 4;
export const OUT_LEN = 5;
export const RFLAGS = 6;
export const STACK_LEN = 7;
export const SHUTDOWN = 8;
/** SHUTDOWN values: the kernel is shutting down (calls fail with ESHUTDOWN); the broker worker is gone. */
export const SHUTDOWN_BEGUN = 1;
export const SHUTDOWN_KERNEL_GONE = 2;

export const ST_IDLE = 0;
export const ST_REQUEST = 1;
export const ST_REPLY = 2;

export const RF_PORT_MSG = 1;
/**
 * Set by the broker, during the call, in a call that parked on another worker (a driver serving the file op): the
 * reply will take at least one more hand-over, and on a machine with a single spin slot the process's spinning
 * would keep that worker off the vCPU it needs, so the process sleeps instead. A hint only: it changes nothing but
 * how the process waits (the process may write it too, and only changes its own waiting).
 */
export const RF_ELSEWHERE = 2;
/** The reply grants the task its lane for the ioctl's file (RES_LANE_*; see src/shm/driver-lane.ts). */
export const RF_LANE = 4;
export const RES_LANE_DRIVER = 4;
export const RES_LANE_FILE = 5;
export const RES_LANE_TOKEN = 6;
export const RES_LANE_SERIAL = 7;

export const ARGS_OFFSET = 64;
export const NARGS = 8;
export const RES_OFFSET = 128;
export const NRES = 8;
export const DATA_OFFSET = 256;
export const DATA_SIZE = 64 * 1024;
export const STACK_OFFSET = DATA_OFFSET + DATA_SIZE;
export const STACK_SIZE = 4096;
export const CHANNEL_BYTES = STACK_OFFSET + STACK_SIZE;

/** Syscall numbers of the model's ABI (not Linux's: the broker is not an x86 kernel). */
export const SYS = {
  nop: 0,
  open: 1,
  close: 2,
  dup: 3,
  dup3: 4,
  fcntl: 5,
  ioctl: 6,
  mmap: 7,
  munmap: 8,
  lseek: 9,
  poll: 10,
  readlink: 11,
  socketpair: 12,
  sendmsg: 13,
  recvmsg: 14,
  getpid: 15,
  exit: 16,
  read: 17,
  write: 18,
  setrlimit: 19,
  getrlimit: 20,
  shutdown: 21,
  /**
   * Not a Linux syscall: the model's vDSO data lookup for libsync's wait fast path — the fence-table handle behind a
   * sync_file fd (see registerSyncFileSyscalls in src/kernel/sync-file.ts).
   */
  sync_file_fence: 22,
  clone: 23,
  wait4: 24,
  /**
   * Not a Linux syscall: is owner token ARGS[0] still registered in the kernel's alive table (1) or not (0)? For
   * plain processes, which are not handed the alive table (src/fence/table.ts): their robust-lock waiters ask here,
   * on the slow path only (see Runtime.ownerLiveness).
   */
  owner_alive: 25,
} as const;
export type SysName = keyof typeof SYS;
export const SYS_NAMES: readonly SysName[] = (() => {
  const names: SysName[] = [];
  for (const [k, v] of Object.entries(SYS)) names[v] = k as SysName;
  return names;
})();

/** Typed views over one channel, shared by both ends. */
export class ChannelViews {
  readonly i32: Int32Array;
  readonly args: Float64Array;
  readonly res: Float64Array;
  readonly data: Uint8Array;
  readonly dataView: DataView;
  readonly stack: Uint8Array;
  constructor(readonly sab: SharedArrayBuffer) {
    this.i32 = new Int32Array(sab, 0, ARGS_OFFSET / 4);
    this.args = new Float64Array(sab, ARGS_OFFSET, NARGS);
    this.res = new Float64Array(sab, RES_OFFSET, NRES);
    this.data = new Uint8Array(sab, DATA_OFFSET, DATA_SIZE);
    this.dataView = new DataView(sab, DATA_OFFSET, DATA_SIZE);
    this.stack = new Uint8Array(sab, STACK_OFFSET, STACK_SIZE);
  }
}

export function createChannel(): SharedArrayBuffer {
  return new SharedArrayBuffer(CHANNEL_BYTES);
}
