/**
 * The driver side of the driver channel (src/shm/driver-channel.ts): downcalls into the kernel, the upcall server
 * (nested inside a downcall's wait, or from the event loop when idle), and the SharedArrayBuffer handles the broker
 * posts on the driver's port. One instance per driver worker, created by workers/driver.ts.
 */
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { KernelError } from '../errors.js';
import { printLine } from '../bug.js';
import { E } from '../uapi/errno.js';
import { ringDoorbell, spinBlockOf } from '../shm/control-block.js';
import { AdaptiveSpin } from '../shm/spin.js';
import type { LockHandle } from '../locking/index.js';
import {
  DOWN_NAMES,
  DriverChannelViews,
  F_DOWN_REPLY,
  F_DOWN_REQ,
  F_DRIVER_CLAIM,
  F_ERRNO,
  F_IDLE,
  F_IN_LEN,
  F_OP,
  F_OUT_LEN,
  F_RFLAGS,
  F_STATE,
  F_UP_REPLY,
  F_UP_REQ,
  G_KERNEL_GONE,
  H_CLAIM_WAIT,
  H_DOORBELL,
  H_GONE,
  H_SEQ,
  MAX_FRAMES,
  UP_NAMES,
  type FrameViews,
} from '../shm/driver-channel.js';

/** What workers/driver.ts hands the runtime. */
export interface DriverInit {
  readonly id: number;
  readonly name: string;
  readonly channel: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
  readonly port: MessagePort;
  readonly maxSpinners: number;
  readonly owner: number;
}

/** One downcall's answer, copied out of the frame (the frame is reused as soon as the call returns). */
export interface DownReply {
  readonly ret: number;
  readonly res: Float64Array;
  readonly data: Uint8Array;
}

/** Serves one upcall: reads the frame's request, writes its reply (RES, DATA, OUT_LEN, RFLAGS); throws for errno. */
export type UpcallServer = (op: number, f: FrameViews) => void;

/** Longest sleep before a waiting driver re-checks the channel and whether it was cut off (ms). */
export const DRIVER_SLICE_MS = 100;
/** How long the region handle for a reply may lag behind the reply before it counts as lost (ms). */
const PORT_DRAIN_MS = 5000;
/**
 * After its last upcall the idle loop stays in its synchronous hot phase this long (ms): spinning in a spin slot
 * while the adaptive budget allows, else sleeping with Atomics.wait in IDLE_SYNC_SLICE_MS slices (a synchronous
 * waiter is woken by the broker's notify directly, without an event-loop turn). Past it, Atomics.waitAsync.
 */
const IDLE_HOT_MS = 20;
const IDLE_SYNC_SLICE_MS = 1;
/** Longest stretch of the hot phase before the event loop (timers, promises) gets a turn (ms). */
const SERVE_SLICE_MS = 2;

export class DriverRuntime {
  readonly ch: DriverChannelViews;
  readonly ctl: Int32Array;
  readonly id: number;
  readonly name: string;
  private readonly port: MessagePort;
  private readonly spin: AdaptiveSpin;
  /** The idle loop's own budget (idle gaps say nothing about how fast the kernel answers downcalls). */
  private readonly idleSpin: AdaptiveSpin;
  /** Frames in use by the current nesting: a new downcall goes to frame `depth`. */
  depth = 0;
  /** regionId → SharedArrayBuffer, posted by the broker (pages this driver allocated or maps). */
  private readonly regions = new Map<number, SharedArrayBuffer>();
  /** dma-buf ino → its vmap lock's handle, posted by the broker. */
  private readonly locks = new Map<number, LockHandle>();
  server: UpcallServer = () => {
    throw new KernelError(E.ENOSYS);
  };
  /**
   * Where an oops of one of this driver's ops goes (an exception that is no KernelError): printed here until
   * src/driver/index.ts points it at the kernel's record (a downcall, made from the frame being served).
   */
  onBug: (text: string) => void = (text) => printLine(`dmabuf-sim: driver ${this.name}: ${text}`);
  private stopped = false;

  constructor(init: DriverInit) {
    this.ch = new DriverChannelViews(init.channel);
    this.ctl = new Int32Array(init.control);
    this.id = init.id;
    this.name = init.name;
    this.port = init.port;
    this.spin = new AdaptiveSpin(spinBlockOf(init.control), init.owner, null, init.maxSpinners);
    this.idleSpin = new AdaptiveSpin(spinBlockOf(init.control), init.owner, null, init.maxSpinners);
  }

  /** The errno a wait gives up with once the driver is cut off: ENODEV (declared dead), ESHUTDOWN (kernel gone). */
  private goneErrno(): number {
    const g = Atomics.load(this.ch.header, H_GONE);
    return g === 0 ? 0 : g === G_KERNEL_GONE ? E.ESHUTDOWN : E.ENODEV;
  }

  /**
   * Makes one downcall: `args` into ARGS, `input` into DATA. Returns the reply copied out; throws KernelError
   * with the broker's errno. While it waits it serves the upcalls the broker nests on top of it (the exporter's
   * own ops when this driver maps a buffer it exported, move_notify, ...).
   */
  call(op: number, args: readonly number[] = [], input?: Uint8Array): DownReply {
    const i = this.depth;
    if (i >= MAX_FRAMES) throw new KernelError(E.EDEADLK, `driver ${this.name}: calls nested deeper than ${MAX_FRAMES}`);
    const f = this.ch.frames[i]!;
    this.claim(i);
    for (let a = 0; a < args.length; a++) f.args[a] = args[a]!;
    if (input) f.put(F_IN_LEN, input);
    else f.i32[F_IN_LEN] = 0;
    f.i32[F_OP] = op;
    f.i32[F_RFLAGS] = 0;
    Atomics.store(f.i32, F_STATE, F_DOWN_REQ);
    ringDoorbell(this.ctl);
    this.waitReply(i);
    const err = f.i32[F_ERRNO]!;
    const reply: DownReply = { ret: f.res[0]!, res: f.res.slice(), data: f.bytes(F_OUT_LEN).slice() };
    Atomics.store(f.i32, F_STATE, F_IDLE);
    if (err) throw new KernelError(err, DOWN_NAMES[op]);
    return reply;
  }

  /**
   * Takes frame `i` for a downcall (compareExchange F_IDLE → F_DRIVER_CLAIM). Frame 0 races the broker posting an
   * upcall to an idle driver: when the broker won, its upcall is served first (it is a call into this driver
   * like any other), then the claim is tried again. A frame still holding our own reply (F_UP_REPLY) becomes idle
   * as soon as the broker consumed it.
   *
   * Race-free: H_CLAIM_WAIT is stored before the compareExchange and the doorbell is read before it; the broker
   * stores F_IDLE and then loads H_CLAIM_WAIT (both seq-cst), so either our compareExchange sees F_IDLE or the
   * broker sees the flag and rings after the value we read. Bounded: DRIVER_SLICE_MS sleeps, and a driver the
   * broker cut off gives up (a dead driver's frame is never consumed).
   */
  private claim(i: number): void {
    const f = this.ch.frames[i]!;
    const header = this.ch.header;
    try {
      for (;;) {
        const seen = Atomics.load(header, H_DOORBELL);
        const s = Atomics.compareExchange(f.i32, F_STATE, F_IDLE, F_DRIVER_CLAIM);
        if (s === F_IDLE) return;
        if (s === F_UP_REQ) {
          this.serve(i);
          continue;
        }
        const gone = this.goneErrno();
        if (gone) throw new KernelError(gone, 'the kernel cut this driver off');
        if (Atomics.load(header, H_CLAIM_WAIT) === 0) {
          Atomics.store(header, H_CLAIM_WAIT, 1);
          continue; // look again with the flag up
        }
        this.sleep(seen);
      }
    } finally {
      if (Atomics.load(header, H_CLAIM_WAIT) !== 0) Atomics.store(header, H_CLAIM_WAIT, 0);
    }
  }

  /**
   * Waits for frame `i`'s reply, serving nested upcalls in frame i + 1 meanwhile.
   *
   * Race-free: the doorbell value is read before the frame states are checked, and the broker bumps the doorbell
   * after every state it stores for us, so a store after the check makes the sleep return at once. Bounded: each
   * sleep is at most DRIVER_SLICE_MS; after each the cut-off word is checked (the broker declared this driver dead,
   * or exited): then the call fails with ENODEV / ESHUTDOWN instead of waiting forever.
   *
   * A nested upcall is served before the reply is taken: the broker posts into frame i + 1 only while frame i is
   * unanswered and may answer right after (a put that releases one of our buffers), so both can be there at
   * once. Returning on the reply alone would leave the upcall unserved — its caller waiting for ever, and its
   * stale request found by a later downcall's wait. The UP_REQ store precedes the DOWN_REPLY store, so reading
   * our reply first and the next frame second cannot miss it.
   */
  private waitReply(i: number): void {
    const f = this.ch.frames[i]!;
    const next = i + 1 < MAX_FRAMES ? this.ch.frames[i + 1]! : null;
    for (;;) {
      const seen = Atomics.load(this.ch.header, H_DOORBELL);
      const replied = Atomics.load(f.i32, F_STATE) === F_DOWN_REPLY;
      if (next && Atomics.load(next.i32, F_STATE) === F_UP_REQ) {
        this.serve(i + 1);
        continue;
      }
      if (replied) return;
      const gone = this.goneErrno();
      if (gone) throw new KernelError(gone, 'the kernel cut this driver off');
      if (this.spin.spinWhileEquals(this.ch.header, H_DOORBELL, seen)) continue;
      this.sleep(seen);
    }
  }

  private sleep(seen: number): void {
    Atomics.wait(this.ch.header, H_DOORBELL, seen, DRIVER_SLICE_MS);
  }

  /**
   * Serves the upcall in frame `i`: the server writes the reply, an exception becomes its errno (a KernelError's,
   * or EIO with the bug printed: a driver bug fails the call, not the machine). Then F_UP_REPLY and the broker's
   * doorbell.
   */
  serve(i: number): void {
    const f = this.ch.frames[i]!;
    const prev = this.depth;
    this.depth = i + 1;
    let err = 0;
    f.i32[F_OUT_LEN] = 0;
    f.i32[F_RFLAGS] = 0;
    try {
      this.server(f.i32[F_OP]!, f);
    } catch (e) {
      if (e instanceof KernelError) err = e.errno;
      else {
        err = E.EIO;
        this.onBug(`BUG in upcall ${UP_NAMES[f.i32[F_OP]!] ?? f.i32[F_OP]}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
    } finally {
      this.depth = prev;
    }
    f.i32[F_ERRNO] = err;
    Atomics.store(f.i32, F_STATE, F_UP_REPLY);
    ringDoorbell(this.ctl);
  }

  /**
   * The idle loop: serves top-level upcalls in frame 0, in a synchronous hot phase like the broker's serve loop.
   * After each upcall it keeps looking for the next one: spinning while it holds a spin slot and the adaptive
   * budget allows (on a 2-vCPU machine a process usually holds the only slot, or the spins miss and the budget
   * drops to zero: then this never spins), else sleeping with Atomics.wait on the doorbell in IDLE_SYNC_SLICE_MS
   * slices — a synchronous sleeper is woken by the broker's notify without an event-loop turn. The event loop gets
   * a turn at least every SERVE_SLICE_MS (timers, promises, port messages). IDLE_HOT_MS after its last upcall the
   * driver is idle: it sleeps with Atomics.waitAsync in DRIVER_SLICE_MS slices and burns no CPU.
   *
   * Race-free as waitReply: the doorbell is read before frame 0 is checked, and the broker rings after every
   * upcall it posts, so a post after the check ends the spin or the sleep at once. Bounded: every sleep is a slice;
   * a driver the broker cut off (H_GONE) stops.
   */
  start(): void {
    const keepAlive = setInterval(() => {}, 1 << 30);
    const f0 = this.ch.frames[0]!;
    const header = this.ch.header;
    let lastWork = -Infinity;
    const pump = (): void => {
      if (this.stopped || this.goneErrno()) {
        clearInterval(keepAlive);
        return;
      }
      const start = performance.now();
      for (;;) {
        const seen = Atomics.load(header, H_DOORBELL);
        if (this.depth === 0 && Atomics.load(f0.i32, F_STATE) === F_UP_REQ) {
          this.serve(0);
          lastWork = performance.now();
          continue;
        }
        const now = performance.now();
        if (now - start > SERVE_SLICE_MS) {
          setImmediate(pump);
          return;
        }
        if (now - lastWork <= IDLE_HOT_MS) {
          if (this.idleSpin.spinWhileEquals(header, H_DOORBELL, seen)) continue;
          Atomics.wait(header, H_DOORBELL, seen, IDLE_SYNC_SLICE_MS);
          continue;
        }
        const w = Atomics.waitAsync(header, H_DOORBELL, seen, DRIVER_SLICE_MS);
        if (!w.async) continue;
        void w.value.then(pump);
        return;
      }
    };
    pump();
  }

  stop(): void {
    this.stopped = true;
  }

  /** The SharedArrayBuffer of region `id` (pages posted on the port before the reply that named them). */
  region(id: number): SharedArrayBuffer {
    return this.regions.get(id) ?? this.drainUntil(() => this.regions.get(id), `region ${id}`);
  }

  /** The vmap lock of dma-buf `ino` (posted on the port with the first reply that named the buffer to us). */
  lock(ino: number): LockHandle {
    return this.locks.get(ino) ?? this.drainUntil(() => this.locks.get(ino), `the lock of dma-buf ino ${ino}`);
  }

  /**
   * Receives port messages until `have()` finds what a reply named. The broker posts before it stores the reply,
   * but a posted message is not always visible the instant the reply is: bounded by PORT_DRAIN_MS, with naps.
   */
  private drainUntil<T>(have: () => T | undefined, what: string): T {
    const deadline = performance.now() + PORT_DRAIN_MS;
    for (let spins = 0; ; spins++) {
      const m = receiveMessageOnPort(this.port);
      if (m) {
        const msg = m.message as { id?: number; sab?: SharedArrayBuffer; lock?: number; handle?: LockHandle };
        if (msg.sab && msg.id !== undefined) this.regions.set(msg.id, msg.sab);
        if (msg.lock !== undefined && msg.handle) this.locks.set(msg.lock, msg.handle);
        const v = have();
        if (v !== undefined) return v;
        continue;
      }
      if (spins > 1000) {
        if (performance.now() > deadline) throw new Error(`dmabuf-sim: driver ${this.name}: ${what} never arrived`);
        Atomics.wait(this.ch.header, H_SEQ, Atomics.load(this.ch.header, H_SEQ), 0.05); // a nap: only this thread writes H_SEQ
      }
    }
  }

  /** Forgets a region this driver freed. */
  forgetRegion(id: number): void {
    this.regions.delete(id);
  }
}

let current: DriverRuntime | null = null;

export function initDriverRuntime(init: DriverInit): DriverRuntime {
  current = new DriverRuntime(init);
  return current;
}

/** The calling driver's runtime; throws outside a driver worker. */
export function drt(): DriverRuntime {
  if (!current) throw new Error('dmabuf-sim: the driver API can only be used inside a driver worker (Machine.boot({ drivers }) / machine.loadDriver)');
  return current;
}
