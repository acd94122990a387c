/**
 * The driver channel: one SharedArrayBuffer per driver worker through which the driver calls the kernel API in
 * the broker (downcalls) and the broker calls the driver's file ops, exporter ops and importer callbacks
 * (upcalls). Calls nest: a stack of frames, one per call in progress.
 *
 * The driver's doorbell is not in this channel but in its bell (src/shm/driver-lane.ts: the broker rings it after
 * every frame it writes for the driver — an upcall posted, a downcall answered — and processes with a lane ring it
 * too); every wait of the driver sleeps on it. `DriverChannelViews.bell` is its view.
 *
 * ## Header (Int32 words)
 *
 *   0             unused (was the doorbell)
 *   1 H_GONE      0 while the driver may talk to the kernel; G_DEAD once the broker cut it off (declared dead:
 *                 it stopped answering) or G_KERNEL_GONE once the broker worker exited (written by the main thread).
 *                 The driver's waits give up with ENODEV / ESHUTDOWN
 *   2 H_SEQ       the driver's own counter (port messages are matched by region id, not by this)
 *   3 H_CLAIM_WAIT 1 while the driver sleeps waiting for the broker to consume its reply in a frame it wants to
 *                 claim (`DriverRuntime.claim`); the broker rings the doorbell after such a consumption only then,
 *                 so a driver sleeping in its idle loop is not woken for nothing on every call
 *
 * ## Frames (MAX_FRAMES of FRAME_BYTES each, from FRAMES_OFFSET)
 *
 * Frame `i` carries the i-th call of the current nesting: a downcall the driver makes while serving the upcall in
 * frame i − 1 (or, for i = 0, from its event loop: probe, timers), or an upcall the broker makes while the
 * driver waits for the downcall in frame i − 1 (or, for i = 0, while the driver is idle).
 *
 *   word 0 F_STATE   F_IDLE → (claim) → F_DOWN_REQ (driver) → F_DOWN_REPLY (broker) → F_IDLE (driver), or
 *                    F_IDLE → (claim) → F_UP_REQ (broker) → F_UP_REPLY (driver) → F_IDLE (broker), or (frame 0
 *                    only) F_IDLE → F_LANE (driver) → F_IDLE (driver): the driver serves a process's ioctl that
 *                    came by a lane (driver-lane.ts), in the context of task F_PID (ARGS[1] = the ioctl cmd); its
 *                    downcalls go to frame 1 up. The broker posts nothing into frame 0 meanwhile — as for an
 *                    upcall the driver is serving, only nested non-file upcalls above a downcall
 *   word 1 F_OP      DOWN.* or UP.* number
 *   word 2 F_ERRNO   0, or the positive errno of the reply
 *   word 3 F_IN_LEN  bytes of DATA the request carries
 *   word 4 F_OUT_LEN bytes of DATA the reply carries
 *   word 5 F_PID     upcall or lane op: the task whose call it serves (0: none, e.g. a release from the kernel)
 *   word 6 F_RFLAGS  reply flags: RF_WOULD_BLOCK (a file op that must sleep: RES[0] names the driver wait queue)
 *   byte 64  f64 ARGS[8]   numeric arguments
 *   byte 128 f64 RES[8]    numeric results (RES[0] is the return value)
 *   byte 256 u8 DATA[FRAME_DATA]  ioctl structs, read bytes, JSON for structured values
 *
 * Claiming: frame 0 may be wanted by both sides at once (the broker posting an upcall to an idle driver, the
 * driver making a downcall from a timer). Each side first takes the frame with compareExchange(F_IDLE → its
 * claim value), writes the request, then stores the REQ state: the loser of the compareExchange never touches the
 * frame's words (the broker queues its upcall; the driver serves the upcall first and claims again). Deeper frames
 * are only ever written by the side whose turn it is, but they are claimed the same way.
 *
 * Ordering: plain stores of OP/ARGS/DATA, then the seq-cst `Atomics.store` of the state; the reader loads the
 * state first. Trust: drivers are kernel code — trusted — but the broker still reads every length once and clamps
 * it to the frame, so a buggy driver corrupts its own calls only.
 */

export const H_GONE = 1;
export const H_SEQ = 2;
export const H_CLAIM_WAIT = 3;
export const G_DEAD = 1;
export const G_KERNEL_GONE = 2;

export const F_STATE = 0;
export const F_OP = 1;
export const F_ERRNO = 2;
export const F_IN_LEN = 3;
export const F_OUT_LEN = 4;
export const F_PID = 5;
export const F_RFLAGS = 6;

export const F_IDLE = 0;
export const F_DOWN_REQ = 1;
export const F_DOWN_REPLY = 2;
export const F_UP_REQ = 3;
export const F_UP_REPLY = 4;
export const F_DRIVER_CLAIM = 5;
export const F_BROKER_CLAIM = 6;
/** Frame 0 held by the driver while it serves a lane op (see the frame table). */
export const F_LANE = 7;

export const RF_WOULD_BLOCK = 1;

export const FRAMES_OFFSET = 64;
export const MAX_FRAMES = 8;
export const F_ARGS_OFFSET = 64;
export const F_RES_OFFSET = 128;
export const F_DATA_OFFSET = 256;
export const FRAME_DATA = 64 * 1024;
export const FRAME_BYTES = F_DATA_OFFSET + FRAME_DATA;
export const DRIVER_CHANNEL_BYTES = FRAMES_OFFSET + MAX_FRAMES * FRAME_BYTES;

/** Downcalls: the kernel API a driver calls. */
export const DOWN = {
  nop: 0,
  register_chrdev: 1,
  unregister_chrdev: 2,
  alloc_pages: 3,
  free_pages: 4,
  export: 5,
  fd: 6,
  get: 7,
  get_dma_buf: 8,
  put: 9,
  attach: 10,
  detach: 11,
  map: 12,
  unmap: 13,
  begin_cpu_access: 14,
  end_cpu_access: 15,
  vmap: 16,
  vunmap: 17,
  pin: 18,
  unpin: 19,
  move_notify: 20,
  wake_up: 21,
  buf_info: 22,
  /** dma_buf_dynamic_attach's cached mapping (pin + map), made under the reservation lock the driver holds. */
  attach_map: 23,
  /** dma_buf_detach's unmap of the cached mapping (+ unpin), under the reservation lock the driver holds. */
  detach_unmap: 24,
  /** A WARN (ARGS[0] = 0) or BUG (1) the driver hit, for the kernel's record; ARGS[1] = 1 when already expected. */
  report: 25,
} as const;
export type DownName = keyof typeof DOWN;
export const DOWN_NAMES: readonly string[] = Object.entries(DOWN).reduce<string[]>((a, [k, v]) => ((a[v] = k), a), []);

/** Upcalls: what the broker asks of a driver. */
export const UP = {
  nop: 0,
  open: 1,
  release: 2,
  ioctl: 3,
  mmap: 4,
  poll: 5,
  read: 6,
  exp_attach: 10,
  exp_detach: 11,
  exp_map: 12,
  exp_unmap: 13,
  exp_release: 14,
  exp_begin_cpu_access: 15,
  exp_end_cpu_access: 16,
  exp_mmap: 17,
  exp_vmap: 18,
  exp_vunmap: 19,
  exp_pin: 20,
  exp_unpin: 21,
  imp_move_notify: 22,
} as const;
export type UpName = keyof typeof UP;
export const UP_NAMES: readonly string[] = Object.entries(UP).reduce<string[]>((a, [k, v]) => ((a[v] = k), a), []);

/** Upcalls that are file operations of a process: served only when the driver is idle (one at a time). */
export function isFileOpUpcall(op: number): boolean {
  return op < 10;
}

/** Exporter-op bits of the export downcall's ARGS[3]: which dma_buf_ops the driver implements. */
export const OPS_BIT = {
  attach: 1,
  detach: 2,
  pin: 4,
  unpin: 8,
  map: 16,
  unmap: 32,
  release: 64,
  beginCpuAccess: 128,
  endCpuAccess: 256,
  mmap: 512,
  vmap: 1024,
  vunmap: 2048,
  cacheSgtMapping: 4096,
} as const;

/**
 * Typed views over one frame — or over anything laid out as one (a lane: `at` gives its base and DATA size).
 */
export class FrameViews {
  readonly i32: Int32Array;
  readonly args: Float64Array;
  readonly res: Float64Array;
  readonly data: Uint8Array;
  constructor(sab: SharedArrayBuffer, index: number, at?: { readonly base: number; readonly dataBytes: number }) {
    const base = at ? at.base : FRAMES_OFFSET + index * FRAME_BYTES;
    this.i32 = new Int32Array(sab, base, F_ARGS_OFFSET / 4);
    this.args = new Float64Array(sab, base + F_ARGS_OFFSET, 8);
    this.res = new Float64Array(sab, base + F_RES_OFFSET, 8);
    this.data = new Uint8Array(sab, base + F_DATA_OFFSET, at ? at.dataBytes : FRAME_DATA);
  }
  /** Reply/request bytes, length clamped to the frame. */
  bytes(lenWord: number): Uint8Array {
    const n = Math.max(0, Math.min(this.data.length, this.i32[lenWord]! | 0));
    return this.data.subarray(0, n);
  }
  /** Writes `bytes` into DATA and its length into `lenWord`; E2BIG-worthy sizes are the caller's check. */
  put(lenWord: number, bytes: Uint8Array): void {
    this.data.set(bytes);
    this.i32[lenWord] = bytes.length;
  }
}

/** Views over a whole driver channel, with the driver's bell (its doorbell: src/shm/driver-lane.ts). */
export class DriverChannelViews {
  readonly header: Int32Array;
  readonly frames: readonly FrameViews[];
  readonly bell: Int32Array;
  constructor(
    readonly sab: SharedArrayBuffer,
    bell: SharedArrayBuffer,
  ) {
    this.header = new Int32Array(sab, 0, FRAMES_OFFSET / 4);
    this.frames = Array.from({ length: MAX_FRAMES }, (_, i) => new FrameViews(sab, i));
    this.bell = new Int32Array(bell);
  }
}

export function createDriverChannel(): SharedArrayBuffer {
  return new SharedArrayBuffer(DRIVER_CHANNEL_BYTES);
}

/** The driver's bell: word B_DOORBELL is the doorbell every wait of the driver sleeps on (driver-lane.ts). */
export const B_DOORBELL = 0;
export const BELL_WORDS = 16;
export function createBell(): SharedArrayBuffer {
  return new SharedArrayBuffer(BELL_WORDS * 4);
}

/** Wakes the driver: the broker calls it right after storing a state the driver waits for. */
export function ringDriver(ch: DriverChannelViews): void {
  Atomics.add(ch.bell, B_DOORBELL, 1);
  Atomics.notify(ch.bell, B_DOORBELL);
}

const enc = new TextEncoder();
const dec = new TextDecoder();
/** JSON in a frame's DATA (structured arguments and results of the slow-path calls). */
export function putJson(f: FrameViews, lenWord: number, v: unknown): void {
  const b = enc.encode(JSON.stringify(v));
  if (b.length > FRAME_DATA) throw new RangeError(`driver channel: ${b.length} bytes of JSON do not fit a frame`);
  f.put(lenWord, b);
}
export function getJson<T>(f: FrameViews, lenWord: number): T {
  const b = f.bytes(lenWord);
  return (b.length === 0 ? null : JSON.parse(dec.decode(b))) as T;
}
