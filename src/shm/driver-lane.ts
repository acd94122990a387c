/**
 * DOC: Driver lanes — a process's direct way into a driver worker for ioctls, with the broker off the hot path.
 *
 * A driver ioctl through the broker costs two hand-overs more than a broker syscall (process → broker → driver →
 * broker → process). A lane removes both: the process posts the ioctl straight into the driver worker's memory
 * and the driver answers into it. The broker stays the kernel of every decision that matters — which task may
 * reach which file — by **grants** it writes into a directory only it and the driver can see; a lane request is a
 * request to run the ioctl of a granted file, and anything the driver cannot vouch for goes back to the broker
 * (the "slow path": the ordinary ioctl syscall, which also gets the grant for next time).
 *
 * Three kinds of shared memory, one trust level each:
 *
 * ## The bell (one per driver, BELL_WORDS Int32, handed to the driver and to every process with a lane into it)
 *
 *   0 B_DOORBELL  bumped (Atomics.add + notify) by the broker after every frame it writes for the driver, and by a
 *                 process after every lane request it posts; every sleep of the driver waits on it
 *
 * Process-writable, like the machine control block's doorbell: a process scribbling on it can cost the driver one
 * sleep slice (a wake-up missed, DRIVER_SLICE_MS at most), never a request — the driver re-scans everything after
 * each slice.
 *
 * ## A lane (one per task and driver; the task and the driver map it; the broker keeps it to mark a dead driver)
 *
 * Shaped like a driver-channel frame (same word offsets for state, op, errno, lengths, pid, flags, ARGS, RES and
 * DATA, see driver-channel.ts), so the driver's upcall server serves the request in place, as an UP.ioctl:
 *
 *   word 0 L_STATE   L_IDLE → L_REQ (task) → L_SERVING (driver: compareExchange from L_REQ) → L_REPLY (driver)
 *                    → L_IDLE (task). A task that waited LANE_PICKUP_MS for a pick-up takes its request back with
 *                    compareExchange(L_REQ → L_IDLE) and goes the slow path: exactly one of the two wins
 *   word 1 F_OP      written by the driver (UP.ioctl) before serving
 *   word 2 F_ERRNO   reply: 0 or the positive errno
 *   word 3 F_IN_LEN  request: bytes of DATA (the ioctl struct)
 *   word 4 F_OUT_LEN reply: bytes of DATA written back (the struct; on failure too, as drm_ioctl copies it out)
 *   word 5 F_PID     written by the driver from the directory (never trusted from the task) before serving
 *   word 6 F_RFLAGS  the server's flags (RF_WOULD_BLOCK: the op must sleep — the answer is then L_SLOW)
 *   word 8 L_TOKEN   request: the grant the task holds for the file (its index + 1)
 *   word 11 L_SERIAL request: that grant's serial (grant indices are reused, serials never: a stale grant fails)
 *   word 9 L_GONE    LG_DEAD once the broker declared the driver dead: a request it was serving fails with ENODEV,
 *                    any other goes the slow path (the broker answers ENODEV for the dead driver's file — or serves
 *                    the file the fd names by now, when a thread sharing the table replaced it)
 *   word 10 L_ANSWER reply: L_DONE (the ioctl ran: errno and RES are its outcome) or L_SLOW (it did not run: no
 *                    valid grant, the file is gone, the op must sleep, the request is malformed — redo it through
 *                    the broker, which decides)
 *   byte 64  f64 ARGS  [0] file id, [1] cmd, [2] arg is a struct (0/1), [3] the integer argument
 *   byte 128 f64 RES   [0] the ioctl's return value
 *   byte 256 u8  DATA[LANE_DATA]
 *
 * Task-writable: whatever the task writes fails its own call at worst. The driver copies the request (ARGS, the
 * token and serial, DATA) into its own memory once, checks the copy against the directory and serves the copy —
 * never the lane, whose every word the task (or a thread it shares the memory with) may rewrite meanwhile — and
 * runs nothing it was not granted; cmd and the integer argument reach the op as the ioctl syscall gives them (an
 * unsigned int, an unsigned long; an f64 no register holds goes the slow path). A lane is never shared by two tasks.
 *
 * ## The directory (one per driver; broker and driver only — kernel memory)
 *
 *   0 D_GEN          bumped by the broker after every change of a lane slot (the driver then re-syncs its lanes:
 *                    new ones' SharedArrayBuffers arrive on its port before the bump)
 *   1 D_WANT_FRAME0  set by the broker when it could not post an upcall because the driver held frame 0 for a
 *                    lane op; the driver rings the broker's doorbell when it gives frame 0 back (see DriverRuntime)
 *   2 D_LANE_BUSY    lane slot + 1 while the driver serves a lane op, else 0 (the broker's watchdog)
 *   3 D_LANE_SEQ     bumped by the driver at the start of every lane op (the watchdog sees progress)
 *   16 .. 16+MAX_LANES        D_LANE_PID: the pid of the task owning lane slot i, 0 = free
 *   then MAX_GRANTS × 3       grant g: [G_FILE] the driver file id (0 = free or revoked), [G_LANE] lane slot + 1,
 *                             [G_SERIAL] the serial of this use of the index (from a counter, never reused)
 *
 * A grant says "the task of lane L may run ioctls on file F". The broker writes it when that task's ioctl on F went
 * the slow path, and revokes (stores 0) the grants of F held by the tasks using an fd table whenever an fd pointing
 * at F is removed from that table (close, dup2 over it, exit: the file op `flush`, as filp_close calls it; only
 * those tasks' fd → file bindings can have changed), every grant of F at its release, and every grant of a lane
 * when its task dies. Revocation happens before the syscall that caused it returns, so a task that still uses a cached grant
 * after its fd changed meaning is sent back to the slow path — which resolves the fd afresh. A slow-path ioctl
 * during which the file's grants were revoked (a thread sharing the table replaced the fd meanwhile) grants
 * nothing: its grant would be younger than the revocation that was to cover it.
 */
import {
  B_DOORBELL,
  F_ARGS_OFFSET,
  F_DATA_OFFSET,
  F_ERRNO,
  F_IN_LEN,
  F_OUT_LEN,
  F_RES_OFFSET,
  FrameViews,
} from './driver-channel.js';

export { B_DOORBELL, BELL_WORDS, createBell } from './driver-channel.js';

export const L_STATE = 0;
export const L_TOKEN = 8;
export const L_GONE = 9;
export const L_ANSWER = 10;
export const L_SERIAL = 11;
export { F_ERRNO as L_ERRNO, F_IN_LEN as L_IN_LEN, F_OUT_LEN as L_OUT_LEN };

export const L_IDLE = 0;
export const L_REQ = 1;
export const L_SERVING = 2;
export const L_REPLY = 3;

export const L_DONE = 0;
export const L_SLOW = 1;
export const LG_DEAD = 1;

/** The ioctl struct a lane carries: _IOC_SIZE is 14 bits, so every real ioctl struct fits; bigger → slow path. */
export const LANE_DATA = 16 * 1024;
export const LANE_BYTES = F_DATA_OFFSET + LANE_DATA;

export const D_GEN = 0;
export const D_WANT_FRAME0 = 1;
export const D_LANE_BUSY = 2;
export const D_LANE_SEQ = 3;
export const D_LANES = 16;
/** Lanes per driver: tasks past this many keep using the slow path (correct, slower). */
export const MAX_LANES = 256;
export const D_GRANTS = D_LANES + MAX_LANES;
/** Grants per driver: (task, file) pairs past this many keep using the slow path. */
export const MAX_GRANTS = 4096;
export const G_FILE = 0;
export const G_LANE = 1;
export const G_SERIAL = 2;
const GRANT_WORDS = 3;
export const DIRECTORY_WORDS = D_GRANTS + MAX_GRANTS * GRANT_WORDS;

/** How long a task waits for the driver to pick its request up before it takes it back and goes the slow path. */
export const LANE_PICKUP_MS = 100;

/** Word index of grant `g`'s field `field` (G_FILE / G_LANE) in the directory. */
export function grantWord(g: number, field: number): number {
  return D_GRANTS + g * GRANT_WORDS + field;
}

export function createLane(): SharedArrayBuffer {
  return new SharedArrayBuffer(LANE_BYTES);
}
export function createDirectory(): SharedArrayBuffer {
  return new SharedArrayBuffer(DIRECTORY_WORDS * 4);
}

/** Wakes the driver: after every store it must see (a frame the broker wrote, a lane request). */
export function ringBell(bell: Int32Array): void {
  Atomics.add(bell, B_DOORBELL, 1);
  Atomics.notify(bell, B_DOORBELL);
}

/** Typed views over one lane: a FrameViews (the upcall server serves it in place) of LANE_DATA bytes. */
export class LaneViews extends FrameViews {
  constructor(readonly sab: SharedArrayBuffer) {
    super(sab, 0, { base: 0, dataBytes: LANE_DATA });
  }
}

// Layout checks at load: a lane is a frame.
if (F_ARGS_OFFSET !== 64 || F_RES_OFFSET !== 128 || F_DATA_OFFSET !== 256) throw new Error('driver-lane.ts: frame layout changed');
