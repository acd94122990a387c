/**
 * The process side of the syscall channel: posts a request, waits for the broker's reply (spinning briefly, then
 * Atomics.wait), and turns errors into SyscallError. One instance per process worker, created by
 * workers/process.ts before the user's module is imported.
 */
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { SyscallError } from '../errors.js';
import { E } from '../uapi/errno.js';
import {
  ChannelViews,
  DATA_SIZE,
  ERRNO,
  IN_LEN,
  OP,
  OUT_LEN,
  RES_LANE_DRIVER,
  RES_LANE_FILE,
  RES_LANE_SERIAL,
  RES_LANE_TOKEN,
  RFLAGS,
  RF_ELSEWHERE,
  RF_LANE,
  RF_PORT_MSG,
  SEQ,
  SHUTDOWN,
  SHUTDOWN_KERNEL_GONE,
  STACK_LEN,
  STATE,
  ST_IDLE,
  ST_REPLY,
  ST_REQUEST,
  SYS,
  SYS_NAMES,
} from '../shm/channel.js';
import { ringDoorbell, spinBlockOf } from '../shm/control-block.js';
import { AdaptiveSpin } from '../shm/spin.js';
import { AliveTable, isTrackedToken } from '../shm/alive.js';
import { K_ALIVE, untrackedOwner } from '../fence/table.js';
import { setDefaultFenceOwner } from '../fence/runtime.js';
import { F_ERRNO, F_IN_LEN, F_OUT_LEN } from '../shm/driver-channel.js';
import {
  L_ANSWER,
  L_GONE,
  L_IDLE,
  L_REPLY,
  L_REQ,
  L_SERIAL,
  L_SERVING,
  L_SLOW,
  L_STATE,
  L_TOKEN,
  LANE_DATA,
  LANE_PICKUP_MS,
  LaneViews,
  ringBell,
} from '../shm/driver-lane.js';

const enc = new TextEncoder();
/** How long a reply's port message may lag behind the reply before it counts as lost (a kernel bug). */
const PORT_DRAIN_MS = 5000;
/**
 * The longest one sleep for a reply lasts before the process re-checks the channel and the kernel's liveness
 * (ms): a lost notify costs at most this, and a dead broker is noticed within it instead of never.
 */
export const REPLY_SLICE_MS = 100;

/**
 * Thrown by exit() to unwind the process's JavaScript stack (the worker entry catches it), and by any syscall
 * made after exit() — in C nothing runs after exit, here a `finally` may, and it must not reach the kernel.
 */
export class ProcessExit extends Error {
  constructor(readonly code: number) {
    super(`process exited with status ${code}`);
    this.name = 'ProcessExit';
  }
}
/** Stack frames of the simulator's own plumbing (C library, worker entry, comlink, Node internals). */
const INFRA_FRAME = /[/\\]src[/\\]user[/\\][^/\\]+\.[jt]s|[/\\]workers[/\\]process\.[jt]s|comlink|[/\\]src[/\\]control[/\\]|node:internal/;

/** A SharedArrayBuffer handle posted with reply `seq`: a region's pages, or a lane into driver `lane` with its bell. */
interface RegionMessage {
  readonly seq: number;
  readonly id?: number;
  readonly sab: SharedArrayBuffer;
  readonly lane?: number;
  readonly bell?: SharedArrayBuffer;
}

/** This task's lane into one driver (src/shm/driver-lane.ts). */
interface Lane {
  readonly v: LaneViews;
  readonly bell: Int32Array;
}

/** A grant this task holds for the file behind one of its fds: which lane, which driver file, token and serial. */
interface LaneGrant {
  readonly lane: Lane;
  readonly file: number;
  readonly token: number;
  readonly serial: number;
}

export interface RuntimeInit {
  /** getpid(): the thread group's id. */
  readonly pid: number;
  /** gettid(): this task's own id (a thread's differs from pid; absent = pid). */
  readonly tid?: number;
  readonly name: string;
  readonly channel: SharedArrayBuffer;
  /** The machine control block (doorbell, spin slots): every word of it is process-writable. */
  readonly control: SharedArrayBuffer;
  /** How many workers may spin for a reply at once (vCPUs − 1): a value, not a shared word a process could change. */
  readonly maxSpinners: number;
  /** The machine's fence table (attach with attachFenceTable from src/fence/index.ts to use kernel fences). */
  readonly fences?: SharedArrayBuffer;
  /**
   * The fence table's kernel state, handed only to a process spawned with { kernelFences: true } (it plays a
   * driver: creates and signals fences). A plain process attaches the table wait-only.
   */
  readonly fenceKernel?: SharedArrayBuffer;
  readonly port: MessagePort;
  /** Send the caller's stack with every syscall, for leak reports (Machine.boot({ recordStacks: true })). */
  readonly recordStacks?: boolean;
  /**
   * This process's owner token in the fence table's alive table (src/shm/alive.ts), registered by the broker
   * and cleared when the process dies: it owns the spin slots and locks the process takes.
   */
  readonly owner?: number;
}

export class Runtime {
  readonly ch: ChannelViews;
  readonly ctl: Int32Array;
  readonly maxSpinners: number;
  readonly pid: number;
  readonly tid: number;
  readonly name: string;
  private readonly port: MessagePort;
  private seq = 0;
  private readonly spin: AdaptiveSpin;
  /** regionId → SharedArrayBuffer, held while some mapping of this process uses it (broker-mirrored count). */
  readonly regions = new Map<number, SharedArrayBuffer>();
  /** The machine's fence table, when the machine handed one over. */
  readonly fences: SharedArrayBuffer | null;
  /** Its kernel state, for a process that plays a driver (RuntimeInit.fenceKernel); null for a plain process. */
  readonly fenceKernel: SharedArrayBuffer | null;

  private readonly recordStacks: boolean;
  /** The exit status once exit() went through: the process is gone and may make no further syscall. */
  exited: number | null = null;
  /** This process's owner token (spin slots, locks); see RuntimeInit.owner. */
  readonly owner: number;
  private readonly alive: AliveTable | null;
  /** Set once the kernel (broker) was found dead: every later call fails at once. */
  private kernelGone = false;
  /** Lanes into drivers, by driver id, and the grants for the files behind fds (a cache: the driver checks). */
  private readonly lanes = new Map<number, Lane>();
  private readonly fdLanes = new Map<number, LaneGrant>();
  /**
   * Lane ioctls of this task: answered by the driver (`done`), sent back to the broker's path by the driver
   * (`slow`: no valid grant, or the op must sleep), taken back unpicked after LANE_PICKUP_MS (`takenBack`).
   */
  readonly laneStats = { done: 0, slow: 0, takenBack: 0 };

  constructor(init: RuntimeInit) {
    this.recordStacks = init.recordStacks ?? false;
    this.fences = init.fences ?? null;
    this.fenceKernel = init.fenceKernel ?? null;
    this.ch = new ChannelViews(init.channel);
    this.ctl = new Int32Array(init.control);
    this.pid = init.pid;
    this.tid = init.tid ?? init.pid;
    this.name = init.name;
    this.port = init.port;
    // The alive table is kernel state: a plain process cannot take back dead spinners' slots itself (the broker
    // releases a dead process's slots when it reaps it).
    this.alive = this.fenceKernel ? new AliveTable(new Int32Array(this.fenceKernel), K_ALIVE) : null;
    this.owner = init.owner ?? untrackedOwner();
    this.maxSpinners = init.maxSpinners;
    this.spin = new AdaptiveSpin(spinBlockOf(init.control), this.owner, this.alive, init.maxSpinners);
  }

  /**
   * Makes one syscall. Arguments go into ARGS, `input` into DATA. Returns RES[0]; on failure throws SyscallError.
   * The caller reads extra results from `ch.res` and reply bytes from `ch.data` (OUT_LEN) before the next call.
   */
  call(op: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, input?: Uint8Array, name?: string): number {
    const ch = this.ch;
    const i32 = ch.i32;
    if (this.exited !== null) throw new ProcessExit(this.exited);
    // No flag of an earlier reply may be read as this call's (the broker clears them too when it takes the call).
    i32[RFLAGS] = 0;
    if (Atomics.load(i32, SHUTDOWN) || this.kernelGone) throw new SyscallError(E.ESHUTDOWN, name ?? SYS_NAMES[op] ?? 'syscall');
    const args = ch.args;
    args[0] = a0;
    args[1] = a1;
    args[2] = a2;
    args[3] = a3;
    args[4] = a4;
    args[5] = a5;
    if (input) {
      if (input.length > DATA_SIZE) throw new SyscallError(E.E2BIG, name ?? SYS_NAMES[op] ?? 'syscall');
      ch.data.set(input);
      i32[IN_LEN] = input.length;
    } else i32[IN_LEN] = 0;
    i32[OP] = op;
    if (this.recordStacks) this.writeStack();
    const seq = ++this.seq;
    i32[SEQ] = seq;
    // Publishes everything above (seq-cst store), then wakes the broker if it sleeps.
    Atomics.store(i32, STATE, ST_REQUEST);
    ringDoorbell(this.ctl);
    if (!this.waitReply()) {
      this.kernelGone = true;
      throw new SyscallError(E.ESHUTDOWN, name ?? SYS_NAMES[op] ?? 'syscall');
    }
    Atomics.store(i32, STATE, ST_IDLE);
    if (i32[RFLAGS]! & RF_PORT_MSG) this.drainPort(seq);
    const err = i32[ERRNO]!;
    if (err) throw new SyscallError(err, name ?? SYS_NAMES[op] ?? 'syscall');
    return ch.res[0]!;
  }

  /**
   * Copies the caller's stack into the channel's STACK area, minus the frames of this C library, so the first
   * frame is the user code that made the call (the kernel stamps it on objects the call creates).
   */
  private writeStack(): void {
    const frames = (new Error().stack ?? '').split('\n').slice(1);
    const user = frames.filter((f) => !INFRA_FRAME.test(f));
    const text = enc.encode(user.map((f) => f.trim()).join('\n'));
    const n = Math.min(text.length, this.ch.stack.length);
    this.ch.stack.set(text.subarray(0, n));
    this.ch.i32[STACK_LEN] = n;
  }

  /**
   * Waits for STATE to become REPLY; false when the kernel died first (the call can never be answered).
   * Race-free: the broker stores REPLY and then notifies; Atomics.wait only sleeps while the word still holds
   * REQUEST, so a reply stored before we sleep makes the wait return at once. Bounded: each sleep lasts at most
   * REPLY_SLICE_MS, after which we re-check the word and ask the alive table whether the broker still lives (its
   * token is in the fence table header; the main thread clears it when the broker worker exits). A call parked in
   * the broker for long (poll, recvmsg) just sleeps slice after slice.
   */
  private waitReply(): boolean {
    const i32 = this.ch.i32;
    if (Atomics.load(i32, STATE) === ST_REPLY) return true;
    if (this.spin.spinWhileEquals(i32, STATE, ST_REQUEST, this.elsewhere)) return true;
    while (Atomics.load(i32, STATE) === ST_REQUEST) {
      if (Atomics.wait(i32, STATE, ST_REQUEST, REPLY_SLICE_MS) === 'timed-out') {
        // A whole slice parked in the kernel: the caller may publish the wait (the lock watchdog's hung reports).
        this.sliceHook?.();
        if (!this.kernelAlive()) return Atomics.load(i32, STATE) !== ST_REQUEST;
      }
    }
    return true;
  }

  /**
   * Runs after every REPLY_SLICE_MS slice the current call spends parked in the kernel (set around one call by the C
   * library; null otherwise): never on a call that returns within a slice.
   */
  sliceHook: (() => void) | null = null;

  /**
   * The spin's early end: the broker handed the call to another worker (RF_ELSEWHERE) and the machine has a single
   * spin slot (2 vCPUs): that worker needs the vCPU this process spins on, so sleeping is the faster wait.
   */
  private readonly elsewhere = (): boolean => this.maxSpinners < 2 && (Atomics.load(this.ch.i32, RFLAGS) & RF_ELSEWHERE) !== 0;

  /**
   * False once the main thread marked this channel SHUTDOWN_KERNEL_GONE (the broker worker exited). A word of this
   * process's own channel, not the fence table's alive entry: that one every process can write, and a process
   * must not be able to make another's calls give up.
   */
  private kernelAlive(): boolean {
    return Atomics.load(this.ch.i32, SHUTDOWN) !== SHUTDOWN_KERNEL_GONE;
  }

  /**
   * How this process attaches to the machine's fence table (attachFenceTable(rt().fences, rt().fenceAttachOptions())):
   * fence waiters then share the syscall spinners' slots, under the limit this process was handed.
   */
  fenceAttachOptions(): { control: SharedArrayBuffer; maxSpinners: number; kernel?: SharedArrayBuffer } {
    const o = { control: this.ctl.buffer as SharedArrayBuffer, maxSpinners: this.maxSpinners };
    // A plain process attaches wait-only; one that plays a driver with the kernel state it was trusted with.
    return this.fenceKernel ? { ...o, kernel: this.fenceKernel } : o;
  }

  /**
   * Owner liveness for a plain process's lock waiters (a process spawned with { kernelFences: true } reads the
   * alive table itself): asks the kernel (SYS.owner_alive) — only on a waiter's slow path, after a sleep slice. An
   * untracked token, or a call that fails (the kernel shutting down or gone), counts as alive: never presumed dead.
   */
  ownerLiveness(): { isAlive(token: number): boolean } {
    if (this.alive) return this.alive;
    return {
      isAlive: (token: number): boolean => {
        if (!isTrackedToken(token)) return true;
        try {
          return this.call(SYS.owner_alive, token, 0, 0, 0, 0, 0, undefined, 'owner_alive') !== 0;
        } catch {
          return true;
        }
      },
    };
  }

  /** Reply bytes of the last call. */
  outBytes(): Uint8Array {
    return this.ch.data.subarray(0, this.ch.i32[OUT_LEN]!);
  }

  /**
   * Receives the SharedArrayBuffer handle(s) posted with reply `seq`. The broker posts before it publishes the
   * reply, but a posted message is not always visible in the port's queue the instant the reply is, so loop
   * until it arrives (messages for later replies cannot exist: this process has one call in flight).
   */
  private drainPort(seq: number): void {
    const deadline = performance.now() + PORT_DRAIN_MS;
    let napMs = 0.02;
    for (let spins = 0; ; spins++) {
      const m = receiveMessageOnPort(this.port);
      if (m) {
        const msg = m.message as RegionMessage;
        if (msg.lane !== undefined && msg.bell) this.lanes.set(msg.lane, { v: new LaneViews(msg.sab), bell: new Int32Array(msg.bell) });
        else if (msg.id !== undefined) this.regions.set(msg.id, msg.sab);
        if (msg.seq === seq) return;
        continue;
      }
      if (spins > 1000) {
        if (performance.now() > deadline) throw new Error(`dmabuf-sim: the kernel's SharedArrayBuffer handle for reply ${seq} never arrived`);
        // A real nap: STATE holds IDLE (stored by call() before draining) and only this thread changes it now, so
        // the wait sleeps its whole timeout — nothing notifies a port message. Backs off up to 1 ms.
        Atomics.wait(this.ch.i32, STATE, ST_IDLE, napMs);
        napMs = Math.min(1, napMs * 2);
      }
    }
  }

  // ---- driver lanes (src/shm/driver-lane.ts) -------------------------------------------------------------------------

  /**
   * After an ioctl on `fd` went through the kernel: remembers the lane grant its reply carried (RF_LANE), or
   * forgets any for `fd` (the file is no driver's, or no grant was made).
   */
  noteLane(fd: number): void {
    const i32 = this.ch.i32;
    const res = this.ch.res;
    const lane = i32[RFLAGS]! & RF_LANE ? this.lanes.get(res[RES_LANE_DRIVER]!) : undefined;
    if (!lane) {
      if (this.fdLanes.size !== 0) this.fdLanes.delete(fd);
      return;
    }
    this.fdLanes.set(fd, { lane, file: res[RES_LANE_FILE]!, token: res[RES_LANE_TOKEN]!, serial: res[RES_LANE_SERIAL]! });
  }

  /** `fd` was closed or replaced by this task: its grant is no use any more (the kernel revoked it as well). */
  forgetLane(fd: number): void {
    if (this.fdLanes.size !== 0) this.fdLanes.delete(fd);
  }

  /**
   * ioctl(fd, cmd, …) by the lane of fd's file, when this task holds a grant for it: the driver runs the ioctl in
   * its worker and answers here, the broker not involved. `bytes` (the struct) is copied in and the driver's copy
   * back out, on failure too. Returns undefined when the call was not made this way — no grant, a struct larger
   * than a lane, or the driver answered L_SLOW (the grant was revoked or is stale, or the op must sleep) or did not
   * pick the request up within LANE_PICKUP_MS: the caller then makes the ioctl syscall, which decides. Throws
   * SyscallError like call(): the ioctl's errno, ENODEV once the driver is dead, ESHUTDOWN once the kernel is.
   */
  laneIoctl(fd: number, cmd: number, bytes: Uint8Array | null, value: number): number | undefined {
    const g = this.fdLanes.get(fd);
    if (!g || this.exited !== null || (bytes && bytes.length > LANE_DATA)) return undefined;
    // A machine shutting down (or gone) refuses calls: the syscall path says so (ESHUTDOWN), as for any call.
    if (this.kernelGone || Atomics.load(this.ch.i32, SHUTDOWN)) return undefined;
    const v = g.lane.v;
    const L = v.i32;
    // A dead driver: the broker decides (ENODEV for its file — or the fd names another file by now, when a thread
    // sharing the table replaced it: this cache is only a hint). The grant is of no use any more.
    if (Atomics.load(L, L_GONE) !== 0) {
      this.fdLanes.delete(fd);
      for (const [drv, lane] of this.lanes) if (lane === g.lane) this.lanes.delete(drv);
      return undefined;
    }
    v.args[0] = g.file;
    v.args[1] = cmd;
    v.args[2] = bytes ? 1 : 0;
    v.args[3] = value;
    if (bytes) {
      v.data.set(bytes);
      L[F_IN_LEN] = bytes.length;
    } else L[F_IN_LEN] = 0;
    L[L_TOKEN] = g.token;
    L[L_SERIAL] = g.serial;
    // Publishes the request (seq-cst store), then wakes the driver if it sleeps.
    Atomics.store(L, L_STATE, L_REQ);
    ringBell(g.lane.bell);
    if (!this.waitLane(L)) {
      this.laneStats.takenBack++;
      return undefined;
    }
    Atomics.store(L, L_STATE, L_IDLE);
    if (L[L_ANSWER] === L_SLOW) {
      this.laneStats.slow++;
      return undefined;
    }
    this.laneStats.done++;
    if (bytes) {
      const n = Math.min(bytes.length, Math.max(0, L[F_OUT_LEN]! | 0));
      bytes.set(v.data.subarray(0, n));
    }
    const err = L[F_ERRNO]!;
    if (err) throw new SyscallError(err, 'ioctl');
    return v.res[0]!;
  }

  /**
   * Waits for the driver's answer in lane `L`: true once it is there, false when the request was taken back (not
   * picked up within LANE_PICKUP_MS). Race-free like waitReply: the driver stores L_REPLY and then notifies, and
   * Atomics.wait sleeps only while the word still holds the state we read (L_REQ, or L_SERVING once picked up).
   * Bounded: a sleep lasts REPLY_SLICE_MS at most, and after each a driver the broker declared dead (L_GONE) ends
   * the wait — a request it was serving fails with ENODEV, one it never picked up is taken back (the broker
   * decides: the grant may have been stale) — and a dead kernel fails the call with ESHUTDOWN. A request still waiting for its pick-up after
   * LANE_PICKUP_MS is taken back with compareExchange(L_REQ → L_IDLE) — the driver picks up with the same
   * compareExchange from L_REQ, so exactly one of us wins — and goes the broker's way, where the watchdog bounds
   * it. An op being served is bounded by the same watchdog: driverTimeoutMs, then the driver is declared dead.
   */
  private waitLane(L: Int32Array): boolean {
    const t0 = performance.now();
    for (;;) {
      const s = Atomics.load(L, L_STATE);
      if (s === L_REPLY) return true;
      if (s !== L_REQ && s !== L_SERVING) return false; // not ours any more (only this thread stores these)
      if (this.spin.spinUntilEquals(L, L_STATE, L_REPLY)) return true;
      if (Atomics.load(L, L_GONE) !== 0) {
        // The driver died. A request it never picked up is taken back for the broker to decide (the grant may have
        // been stale); one it was serving ran on the granted file, whose driver is gone: ENODEV.
        if (Atomics.compareExchange(L, L_STATE, L_REQ, L_IDLE) === L_REQ) return false;
        if (Atomics.load(L, L_STATE) === L_REPLY) return true;
        throw new SyscallError(E.ENODEV, 'ioctl');
      }
      if (!this.kernelAlive()) {
        this.kernelGone = true;
        throw new SyscallError(E.ESHUTDOWN, 'ioctl');
      }
      const waited = performance.now() - t0;
      if (s === L_REQ && waited >= LANE_PICKUP_MS) {
        if (Atomics.compareExchange(L, L_STATE, L_REQ, L_IDLE) === L_REQ) return false;
        continue;
      }
      Atomics.wait(L, L_STATE, s, s === L_REQ ? Math.min(REPLY_SLICE_MS, LANE_PICKUP_MS - waited) : REPLY_SLICE_MS);
    }
  }

  region(id: number): SharedArrayBuffer {
    const sab = this.regions.get(id);
    if (!sab) throw new Error(`dmabuf-sim: region ${id} not received`);
    return sab;
  }
}

let current: Runtime | null = null;

export function initRuntime(init: RuntimeInit): Runtime {
  current = new Runtime(init);
  if (init.owner !== undefined) setDefaultFenceOwner(init.owner);
  return current;
}

/** The calling process's runtime; throws when called outside a process worker. */
export function rt(): Runtime {
  if (!current) throw new Error('dmabuf-sim: syscalls can only be made inside a process spawned by Machine.spawn()');
  return current;
}
