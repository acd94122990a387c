/**
 * The driver side of the driver channel (src/shm/driver-channel.ts) and of its lanes (src/shm/driver-lane.ts):
 * downcalls into the kernel, the upcall server (nested inside a downcall's wait, or from the event loop when idle),
 * processes' ioctls that come by their lanes, and the SharedArrayBuffer handles the broker posts on the driver's
 * port. One instance per driver worker, created by workers/driver.ts.
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
  F_LANE,
  F_OP,
  F_PID,
  F_OUT_LEN,
  F_RFLAGS,
  F_STATE,
  F_UP_REPLY,
  F_UP_REQ,
  G_KERNEL_GONE,
  B_DOORBELL,
  H_CLAIM_WAIT,
  H_GONE,
  H_SEQ,
  MAX_FRAMES,
  RF_WOULD_BLOCK,
  UP,
  UP_NAMES,
  type FrameViews,
} from '../shm/driver-channel.js';
import {
  D_GEN,
  D_LANE_BUSY,
  D_LANE_SEQ,
  D_LANES,
  D_WANT_FRAME0,
  G_FILE,
  G_LANE,
  G_SERIAL,
  grantWord,
  L_ANSWER,
  L_DONE,
  L_REPLY,
  L_REQ,
  L_SERIAL,
  L_SERVING,
  L_SLOW,
  L_STATE,
  L_TOKEN,
  LaneViews,
  createLane,
  LANE_DATA,
  MAX_GRANTS,
  MAX_LANES,
} from '../shm/driver-lane.js';

/** What workers/driver.ts hands the runtime. */
export interface DriverInit {
  readonly id: number;
  readonly name: string;
  readonly channel: SharedArrayBuffer;
  /** The driver's bell: its doorbell, which processes with a lane ring too (src/shm/driver-lane.ts). */
  readonly bell: SharedArrayBuffer;
  /** Its lane directory (which task owns each lane, which files each may reach): broker and driver only. */
  readonly directory: SharedArrayBuffer;
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
/**
 * After a lane op the idle loop spins this long on its bell without a spin slot (ms), as the broker does after a
 * syscall: it is the server its caller spins for — the caller holds the slot, the vCPU this needs is the other
 * one. Short: a driver that gets no lane request within it goes back to the slot rules.
 */
const LANE_SPIN_MS = 0.1;
/** How long lane ops leave frame 0 alone after the broker asked for it (ms): its post wins the frame meanwhile. */
const FRAME0_YIELD_MS = 0.5;

/** An f64 the ioctl syscall would take as a 64-bit register value (src/kernel/entry.ts: an integer in [-2^63, 2^64)). */
function isRegister(v: number): boolean {
  return Number.isInteger(v) && v >= -(2 ** 63) && v < 2 ** 64;
}

/** A lane the driver serves: its task (from the directory) and its memory. */
interface LaneSlot {
  readonly slot: number;
  readonly pid: number;
  readonly v: LaneViews;
}

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
  /** The lane directory (broker-written) and the lanes in use as of its generation `laneGen`. */
  private readonly dir: Int32Array;
  private laneGen = 0;
  private lanes: LaneSlot[] = [];
  /** Lane memory posted on the port and not yet in use, by "slot:pid". */
  private readonly laneMsgs = new Map<string, SharedArrayBuffer>();
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
    this.ch = new DriverChannelViews(init.channel, init.bell);
    this.dir = new Int32Array(init.directory);
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
    if (i === 0) this.releaseFrame0();
    else Atomics.store(f.i32, F_STATE, F_IDLE);
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
    const bell = this.ch.bell;
    try {
      for (;;) {
        const seen = Atomics.load(bell, B_DOORBELL);
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
      const seen = Atomics.load(this.ch.bell, B_DOORBELL);
      const replied = Atomics.load(f.i32, F_STATE) === F_DOWN_REPLY;
      if (next && Atomics.load(next.i32, F_STATE) === F_UP_REQ) {
        this.serve(i + 1);
        continue;
      }
      if (replied) return;
      const gone = this.goneErrno();
      if (gone) throw new KernelError(gone, 'the kernel cut this driver off');
      if (this.spin.spinWhileEquals(this.ch.bell, B_DOORBELL, seen)) continue;
      this.sleep(seen);
    }
  }

  private sleep(seen: number): void {
    Atomics.wait(this.ch.bell, B_DOORBELL, seen, DRIVER_SLICE_MS);
  }

  /**
   * Serves the upcall in frame `i`: the server writes the reply, an exception becomes its errno (a KernelError's,
   * or EIO with the bug printed: a driver bug fails the call, not the machine). Then F_UP_REPLY and the broker's
   * doorbell.
   */
  serve(i: number): void {
    const f = this.ch.frames[i]!;
    f.i32[F_ERRNO] = this.run(f.i32[F_OP]!, f, i + 1);
    Atomics.store(f.i32, F_STATE, F_UP_REPLY);
    ringDoorbell(this.ctl);
  }

  /**
   * Runs the server on request `f` (a frame, or a lane) with downcalls going to frame `depth`: returns the errno
   * (a KernelError's, or EIO with the bug reported: a driver bug fails the call, not the machine).
   */
  private run(op: number, f: FrameViews, depth: number): number {
    const prev = this.depth;
    this.depth = depth;
    f.i32[F_OUT_LEN] = 0;
    f.i32[F_RFLAGS] = 0;
    try {
      this.server(op, f);
      return 0;
    } catch (e) {
      if (e instanceof KernelError) return e.errno;
      this.onBug(`BUG in upcall ${UP_NAMES[op] ?? op}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      return E.EIO;
    } finally {
      this.depth = prev;
    }
  }

  /**
   * Gives frame 0 back (F_IDLE) and rings the broker when it asked (D_WANT_FRAME0: it could not post an upcall
   * while we held the frame). Race-free: we store F_IDLE then read the flag; the broker stores the flag then
   * retries its compareExchange on the frame — one of the two sees the other's store.
   */
  private releaseFrame0(): void {
    Atomics.store(this.ch.frames[0]!.i32, F_STATE, F_IDLE);
    if (Atomics.load(this.dir, D_WANT_FRAME0) !== 0) {
      Atomics.store(this.dir, D_WANT_FRAME0, 0);
      ringDoorbell(this.ctl);
      // Fairness: a stream of lane requests would win frame 0 back before the broker (woken just now) can post.
      this.frame0YieldUntil = performance.now() + FRAME0_YIELD_MS;
    }
  }

  /** Until when lane ops leave frame 0 to the broker (it asked for the frame: see releaseFrame0); 0 = no yield. */
  private frame0YieldUntil = 0;

  // ---- lanes (src/shm/driver-lane.ts) ------------------------------------------------------------------------------

  /**
   * Brings the lanes in use up to the directory's generation: a freed slot is forgotten, a new one's memory taken
   * from the port (the broker posts it before it bumps D_GEN, so it is there or arriving: drainUntil's bound).
   */
  private syncLanes(): void {
    const gen = Atomics.load(this.dir, D_GEN);
    if (gen === this.laneGen) return;
    this.laneGen = gen;
    const old = new Map(this.lanes.map((l) => [l.slot, l]));
    const lanes: LaneSlot[] = [];
    for (let slot = 0; slot < MAX_LANES; slot++) {
      const pid = Atomics.load(this.dir, D_LANES + slot);
      if (pid === 0) continue;
      const cur = old.get(slot);
      if (cur?.pid === pid) {
        lanes.push(cur);
        continue;
      }
      const key = `${slot}:${pid}`;
      const sab = this.laneMsgs.get(key) ?? this.drainUntil(() => this.laneMsgs.get(key), `lane ${slot} of pid ${pid}`);
      this.laneMsgs.delete(key);
      lanes.push({ slot, pid, v: new LaneViews(sab) });
    }
    this.lanes = lanes;
    // Lanes announced and already freed again before we looked: their memory is not needed.
    for (const key of this.laneMsgs.keys()) {
      const [slot, pid] = key.split(':').map(Number) as [number, number];
      if (Atomics.load(this.dir, D_LANES + slot) !== pid) this.laneMsgs.delete(key);
    }
  }

  /** Serves every lane with a request waiting; returns how many it answered. Idle loop only (depth 0). */
  private serveLanes(): number {
    if (this.frame0YieldUntil !== 0) {
      if (performance.now() < this.frame0YieldUntil) return 0;
      this.frame0YieldUntil = 0;
    }
    if (Atomics.load(this.dir, D_GEN) !== this.laneGen) this.syncLanes();
    let n = 0;
    const lanes = this.lanes;
    for (let i = 0; i < lanes.length; i++) {
      const lane = lanes[i]!;
      if (Atomics.load(lane.v.i32, L_STATE) === L_REQ && this.serveLane(lane)) n++;
    }
    return n;
  }

  /**
   * Serves `lane`'s request as the UP.ioctl it is, in the context of the lane's task — when frame 0 is free: a lane
   * op holds it (F_LANE) the way a file-op upcall does, so the broker posts no other file op meanwhile and finds the
   * op's task for its downcalls (frame 1 up). Returns false when it did not take the request (the broker's upcall
   * is in frame 0: served first; or the task took its request back).
   *
   * The request runs only when the directory vouches for it: the lane's slot still belongs to its task, and the
   * token names a live grant of this lane for the request's file with the request's serial. Anything else (a
   * revoked or stale grant, an op that must sleep) is answered L_SLOW without running: the task redoes the call
   * through the broker. D_LANE_BUSY / D_LANE_SEQ let the broker's watchdog see an op that never ends.
   */
  private serveLane(lane: LaneSlot): boolean {
    const L = lane.v.i32;
    const f0 = this.ch.frames[0]!;
    const s0 = Atomics.compareExchange(f0.i32, F_STATE, F_IDLE, F_LANE);
    if (s0 !== F_IDLE) {
      // Our last upcall's reply not consumed yet: ask to be rung when it is (H_CLAIM_WAIT, as claim() does), and
      // look once more with the flag up — else the request would wait for a sleep slice.
      if (s0 !== F_UP_REPLY) return false;
      Atomics.store(this.ch.header, H_CLAIM_WAIT, 1);
      const again = Atomics.compareExchange(f0.i32, F_STATE, F_IDLE, F_LANE);
      // Still our unconsumed reply: keep the flag (the broker rings once it consumed it); anything else: drop it.
      if (again !== F_UP_REPLY) Atomics.store(this.ch.header, H_CLAIM_WAIT, 0);
      if (again !== F_IDLE) return false;
    }
    const dir = this.dir;
    try {
      if (Atomics.compareExchange(L, L_STATE, L_REQ, L_SERVING) !== L_REQ) return false;
      let answer = L_SLOW;
      let err = 0;
      // The request is copied into driver memory once, and only the copy is checked and served: the task (or any
      // thread it shares the lane with) may rewrite every word of the lane meanwhile.
      const req = this.laneReq;
      const g = (L[L_TOKEN]! | 0) - 1;
      const fileId = lane.v.args[0]!;
      const cmd = lane.v.args[1]!;
      const isStruct = lane.v.args[2]!;
      const value = lane.v.args[3]!;
      const inLen = L[F_IN_LEN]! | 0;
      if (
        Atomics.load(dir, D_LANES + lane.slot) === lane.pid &&
        g >= 0 &&
        g < MAX_GRANTS &&
        fileId > 0 &&
        Atomics.load(dir, grantWord(g, G_FILE)) === fileId &&
        Atomics.load(dir, grantWord(g, G_LANE)) === lane.slot + 1 &&
        Atomics.load(dir, grantWord(g, G_SERIAL)) === (L[L_SERIAL]! | 0) &&
        isRegister(cmd) &&
        isRegister(value) &&
        inLen >= 0 &&
        inLen <= LANE_DATA
      ) {
        // As the ioctl syscall hands them over (src/kernel/entry.ts): cmd an unsigned int, the integer argument an
        // unsigned long; a value no register holds went the broker's way above (it answers EINVAL).
        req.args[0] = fileId;
        req.args[1] = cmd >>> 0;
        req.args[2] = isStruct === 0 ? 0 : 1;
        req.args[3] = value < 0 ? value + 2 ** 64 : value;
        req.data.set(lane.v.data.subarray(0, inLen));
        req.i32[F_IN_LEN] = inLen;
        // The op's context, from the directory (never from the lane): for the server and for the broker's downcalls.
        req.i32[F_PID] = lane.pid;
        req.i32[F_OP] = UP.ioctl;
        f0.i32[F_PID] = lane.pid;
        f0.args[1] = cmd >>> 0;
        Atomics.store(dir, D_LANE_BUSY, lane.slot + 1);
        Atomics.add(dir, D_LANE_SEQ, 1);
        err = this.run(UP.ioctl, req, 1);
        Atomics.store(dir, D_LANE_BUSY, 0);
        answer = req.i32[F_RFLAGS]! & RF_WOULD_BLOCK ? L_SLOW : L_DONE;
        if (answer === L_DONE) {
          const out = req.bytes(F_OUT_LEN);
          lane.v.data.set(out);
          L[F_OUT_LEN] = out.length;
          lane.v.res[0] = req.res[0]!;
        }
      }
      L[L_ANSWER] = answer;
      L[F_ERRNO] = err;
      Atomics.store(L, L_STATE, L_REPLY);
      Atomics.notify(L, L_STATE);
      return true;
    } finally {
      this.releaseFrame0();
    }
  }

  /** The lane request being served: driver memory, laid out as a lane (the upcall server serves it in place). */
  private readonly laneReq = new LaneViews(createLane());

  /**
   * The idle loop: serves top-level upcalls in frame 0 and lane requests (serveLanes), in a synchronous hot phase
   * like the broker's serve loop. For 0.1 ms after a lane op it spins on the bell without a slot (LANE_SPIN_MS: it
   * is the server its caller spins for). After an upcall it keeps looking for the next one: spinning while it holds a spin slot and the adaptive
   * budget allows (on a 2-vCPU machine a process usually holds the only slot, or the spins miss and the budget
   * drops to zero: then this never spins), else sleeping with Atomics.wait on the doorbell in IDLE_SYNC_SLICE_MS
   * slices — a synchronous sleeper is woken by the broker's notify without an event-loop turn. The event loop gets
   * a turn at least every SERVE_SLICE_MS (timers, promises, port messages). IDLE_HOT_MS after its last upcall the
   * driver is idle: it sleeps with Atomics.waitAsync in DRIVER_SLICE_MS slices and burns no CPU.
   *
   * Race-free as waitReply: the doorbell is read before frame 0 and the lanes are checked, and the broker rings
   * after every upcall it posts, a task after every lane request, so a post after the check ends the spin or the
   * sleep at once. Bounded: every sleep is a slice;
   * a driver the broker cut off (H_GONE) stops.
   */
  start(): void {
    const keepAlive = setInterval(() => {}, 1 << 30);
    const f0 = this.ch.frames[0]!;
    const bell = this.ch.bell;
    let lastWork = -Infinity;
    let lastLane = -Infinity;
    const pump = (): void => {
      if (this.stopped || this.goneErrno()) {
        clearInterval(keepAlive);
        return;
      }
      const start = performance.now();
      for (;;) {
        const seen = Atomics.load(bell, B_DOORBELL);
        let worked = false;
        if (this.depth === 0 && Atomics.load(f0.i32, F_STATE) === F_UP_REQ) {
          this.serve(0);
          worked = true;
        } else if (this.depth === 0 && this.serveLanes() > 0) {
          lastLane = performance.now();
          worked = true;
        }
        const now = performance.now();
        if (worked) lastWork = now;
        // Checked after work too: a stream of requests must not keep timers and promises from ever running.
        if (now - start > SERVE_SLICE_MS) {
          setImmediate(pump);
          return;
        }
        if (worked) continue;
        if (this.frame0YieldUntil !== 0) {
          // Lanes paused for the broker's post (releaseFrame0): a lane request meanwhile must not sleep a whole idle
          // slice — wake at the pause's end at the latest.
          Atomics.wait(bell, B_DOORBELL, seen, Math.max(0.05, this.frame0YieldUntil - now));
          continue;
        }
        if (now - lastLane <= LANE_SPIN_MS) {
          // The server's spin (no slot: see LANE_SPIN_MS) until the bell moves; bounded by LANE_SPIN_MS.
          for (let i = 0; Atomics.load(bell, B_DOORBELL) === seen; i++) {
            if ((i & 31) === 31 && performance.now() - lastLane > LANE_SPIN_MS) break;
          }
          continue;
        }
        if (now - lastWork <= IDLE_HOT_MS) {
          if (this.idleSpin.spinWhileEquals(bell, B_DOORBELL, seen)) continue;
          Atomics.wait(bell, B_DOORBELL, seen, IDLE_SYNC_SLICE_MS);
          continue;
        }
        const w = Atomics.waitAsync(bell, B_DOORBELL, seen, DRIVER_SLICE_MS);
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
        const msg = m.message as { id?: number; sab?: SharedArrayBuffer; lock?: number; handle?: LockHandle; lane?: number; pid?: number };
        if (msg.sab && msg.lane !== undefined) this.laneMsgs.set(`${msg.lane}:${msg.pid}`, msg.sab);
        else if (msg.sab && msg.id !== undefined) this.regions.set(msg.id, msg.sab);
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
