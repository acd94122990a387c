/**
 * Syscall entry: the broker's serve loop. It finds posted requests in the processes' channels, dispatches them
 * to handlers, parks the ones that must block, and publishes replies.
 *
 * Threading: runs on the broker thread only. The loop alternates between a synchronous hot phase (scan, serve,
 * spin briefly while requests keep coming) and the event loop (control-plane messages, timers, Atomics.waitAsync
 * on the doorbell while idle). The hot phase yields to the event loop at least every SLICE_MS, so control calls
 * and poll timeouts are never starved by a busy process.
 */
import { KernelBug, printLine, warn } from '../bug.js';
import { fenceRuntime, fenceRuntimeAttached } from '../fence/runtime.js';
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import {
  ERRNO,
  IN_LEN,
  DATA_SIZE,
  STACK_SIZE,
  OP,
  OUT_LEN,
  RFLAGS,
  RF_PORT_MSG,
  SEQ,
  STACK_LEN,
  STATE,
  ST_REPLY,
  ST_REQUEST,
  SYS_NAMES,
} from '../shm/channel.js';
import { DOORBELL } from '../shm/control-block.js';
import type { Kernel } from './kernel.js';
import type { ShmRegion } from './mm.js';
import type { Task } from './task.js';
import { Blocked, blockOnPromise, type SyscallOutcome } from './wait.js';

/** One request being served: typed access to the caller's channel. */
export class SyscallRequest {
  /**
   * The request's ARGS and IN_LEN as they were when it was dispatched. The process can write its channel at any
   * moment, also while its call runs or is parked; the kernel reads them once (copy_from_user), so a check made on
   * an argument still holds when the handler uses it.
   */
  private readonly argv: Float64Array;
  readonly inLen: number;

  constructor(
    readonly task: Task,
    readonly op: number,
    readonly seq: number,
  ) {
    const ch = task.channel;
    // Into the task's own copy buffer (see Task.argsCopy): no allocation on the syscall path.
    task.argsCopy.set(ch.args);
    this.argv = task.argsCopy;
    this.inLen = Atomics.load(ch.i32, IN_LEN);
  }

  /** IN_LEN within DATA: anything else is a bad user pointer, EFAULT before any handler runs. */
  get inLenValid(): boolean {
    return this.inLen >= 0 && this.inLen <= DATA_SIZE;
  }

  /**
   * The raw ARGS words. Handlers read arguments through the typed accessors below instead: the process writes
   * ARGS itself and may write any f64 (NaN, 3.5, 1e300), which no C caller can pass.
   */
  get args(): Float64Array {
    return this.argv;
  }

  // ---- arguments, as the C ABI hands them over -------------------------------------------------------------------
  //
  // An argument is a 64-bit register. The channel carries it as an f64, which encodes every register value as an
  // integer in [-2^63, 2^64) (exactly up to 2^53, coarsely above: the magnitude range checks need). An f64 that is
  // no such integer (NaN, ±Infinity, a fraction, beyond 64 bits) is no register value at all: the call is refused
  // with EINVAL (EBADF for an fd) when the argument is read. Otherwise each accessor converts the register to its
  // C parameter type exactly as the ABI does — an int keeps the low 32 bits, an unsigned long all 64 — and the
  // handler checks that C value as Linux would. Self-contained on purpose: the isolation checks of shared words
  // live elsewhere.

  /** ARGS[i] as a 64-bit register value (see above); throws `err` when it is none. */
  private reg(i: number, err: number): number {
    const v = this.argv[i]!;
    if (!Number.isInteger(v) || v < -(2 ** 63) || v >= 2 ** 64) throw new KernelError(err, `argument ${i} is not an integer register value`);
    return v;
  }
  /** ARGS[i] as a C `int`: the low 32 bits, signed. */
  int(i: number): number {
    return this.reg(i, E.EINVAL) | 0;
  }
  /** ARGS[i] as a C `unsigned int`: the low 32 bits. */
  uint(i: number): number {
    return this.reg(i, E.EINVAL) >>> 0;
  }
  /** ARGS[i] as an `int fd`: like int(), but a non-register value is EBADF (no table is ever indexed with it). */
  fd(i: number): number {
    return this.reg(i, E.EBADF) | 0;
  }
  /** ARGS[i] as a `long` / `off_t` / `loff_t`: signed 64 bits. */
  long(i: number): number {
    const v = this.reg(i, E.EINVAL);
    return v >= 2 ** 63 ? v - 2 ** 64 : v;
  }
  /** ARGS[i] as a `size_t` / `unsigned long` / `rlim_t`: unsigned 64 bits (-1 is 2^64 − 1, held as 2^64). */
  ulong(i: number): number {
    const v = this.reg(i, E.EINVAL);
    return v < 0 ? v + 2 ** 64 : v;
  }
  /** Extra results beyond the return value (res[1..]). */
  get res(): Float64Array {
    return this.task.channel.res;
  }
  /** The request's input bytes (a view into the channel: copy what must outlive the call). */
  get input(): Uint8Array {
    const ch = this.task.channel;
    return ch.data.subarray(0, this.inLen);
  }
  inputString(): string {
    return Buffer.from(this.input).toString('utf8');
  }
  /** The whole data area, for handlers that write their reply in place. */
  get data(): Uint8Array {
    return this.task.channel.data;
  }
  get dataView(): DataView {
    return this.task.channel.dataView;
  }
  /** Declares that the reply carries `len` bytes of DATA. */
  setOutLen(len: number): void {
    this.task.channel.i32[OUT_LEN] = len;
  }
  /** Copies `bytes` into DATA as the reply payload. */
  out(bytes: Uint8Array): void {
    if (bytes.length > this.task.channel.data.length) throw new KernelError(E.EOVERFLOW);
    this.task.channel.data.set(bytes);
    this.setOutLen(bytes.length);
  }
  /** Hands the process a SharedArrayBuffer handle with the reply (it drains its port by sequence number). */
  postRegion(region: ShmRegion): void {
    if (!this.task.port || this.task.state === 'dead') throw new KernelError(E.ESRCH);
    this.task.port.postMessage({ seq: this.seq, id: region.id, sab: region.sab });
    Atomics.or(this.task.channel.i32, RFLAGS, RF_PORT_MSG);
  }
}

export type Handler = (k: Kernel, req: SyscallRequest) => SyscallOutcome;

/** Bugs (non-KernelError exceptions) the kernel hit while serving calls: each is an oops, reported at shutdown. */
export interface Oops {
  readonly pid: number;
  readonly call: string;
  readonly message: string;
  /** True when a KUnit case provoked it on purpose and said so (KunitContext.expectBug); printed as one line. */
  readonly expected: boolean;
}

export class SyscallEntry {
  private readonly handlers: (Handler | undefined)[] = [];
  /** Tasks with a channel, in pid order (the scan order). */
  private readonly scan: Task[] = [];
  readonly oopses: Oops[] = [];
  /** Names a syscall for diagnostics (ioctl names are filled in by the ioctl handler itself). */
  callName: (op: number, t: Task) => string = (op) => SYS_NAMES[op] ?? `sys${op}`;

  constructor(readonly k: Kernel) {}

  register(op: number, h: Handler): void {
    if (this.handlers[op]) throw new Error(`syscall ${op} registered twice`);
    this.handlers[op] = h;
  }

  addTask(t: Task): void {
    this.scan.push(t);
  }
  removeTask(t: Task): void {
    const i = this.scan.indexOf(t);
    if (i >= 0) this.scan.splice(i, 1);
  }

  /**
   * Other request sources the serve loop scans with the channels (the driver channels: driver-host.ts). Each
   * returns how many requests or replies it handled.
   */
  readonly sources: (() => number)[] = [];

  /**
   * Set by kernel code that left promise work for the microtask queue (a driver's async downcall handler, an
   * upcall's answer settling a promise): microtasks run only once the serve loop's synchronous hot phase returns,
   * so the loop gives up the rest of its slice at once (setImmediate) instead of spinning on for 0.1 ms first.
   */
  turnWanted = false;

  /** Serves every posted request once. Returns how many were dispatched. */
  serveAll(): number {
    let n = 0;
    for (let i = 0; i < this.sources.length; i++) n += this.sources[i]!();
    const tasks = this.scan;
    for (let i = 0; i < tasks.length; i++) {
      const t = tasks[i]!;
      if (t.inFlight) continue;
      // Atomics.load pairs with the process's Atomics.store(STATE, REQUEST): after it, OP/ARGS/DATA are visible.
      if (Atomics.load(t.channel.i32, STATE) !== ST_REQUEST) continue;
      this.dispatch(t);
      n++;
    }
    return n;
  }

  private dispatch(t: Task): void {
    const i32 = t.channel.i32;
    const op = i32[OP]!;
    const req = new SyscallRequest(t, op, i32[SEQ]!);
    i32[RFLAGS] = 0;
    i32[OUT_LEN] = 0;
    t.inFlight = true;
    t.syscalls++;
    t.currentCall = SYS_NAMES[op] ?? `sys${op}`;
    const k = this.k;
    // (Only when non-empty: a length store on every dispatch showed up in the syscall path's profile.)
    if (k.callFiles.length !== 0) k.callFiles.length = 0;
    k.current = t;
    k.currentStack = k.options.recordStacks ? readStack(t) : undefined;
    if (t.state === 'dead') {
      // After exit() the task is torn down but its worker may still run a `finally`: nothing it asks for may
      // create kernel objects again (they would outlive the teardown). The runtime refuses such calls itself;
      // this is the kernel's half of that promise.
      k.current = null;
      this.finish(t, -1, E.ESRCH);
      return;
    }
    pumpSignalledFences();
    const releases = this.callReleases;
    k.releaseSink = releases;
    try {
      const h = this.handlers[op];
      if (!h) throw new KernelError(E.ENOSYS);
      if (!req.inLenValid) throw new KernelError(E.EFAULT, `IN_LEN ${req.inLen} outside the channel's DATA`);
      const r = h(k, req);
      if (r instanceof Blocked) {
        // A call that sleeps after it dropped a last reference (none does today): its releases are still the
        // task's (Task.releases, awaited by its reap) and the machine's; only this reply does not wait for them.
        releases.length = 0;
        this.park(t, r);
      } else this.reply(t, r, 0, releases);
    } catch (e) {
      this.reply(t, -1, this.errnoOf(t, e), releases);
    } finally {
      k.current = null;
      k.releaseSink = null;
    }
    // After the reply, so a wake this call deferred (e.g. its INC signalled a fence a poller waits on) completes
    // other parked calls now, not when the serve slice ends.
    k.runDeferred();
  }

  /**
   * What a handler's exception returns to the caller. A KernelError is the call's -errno. A KernelBug (BUG(),
   * src/bug.ts) is an oops: recorded for the shutdown report and answered with EIO, and the broker goes on serving
   * the other processes. Any other exception is a bug nobody named (a TypeError in kernel code): an oops too.
   */
  private errnoOf(t: Task, e: unknown): number {
    if (e instanceof KernelError) return e.errno;
    this.recordOops(t.pid, t.currentCall, e);
    return E.EIO;
  }

  /**
   * Records an oops (a KernelBug or any other non-errno exception in kernel code) and prints it with its stack —
   * or, when a test provoked it on purpose (`expected`), as one line saying so.
   */
  recordOops(pid: number, call: string, e: unknown, expected = false): void {
    const message = e instanceof KernelBug ? (e.stack ?? e.message) : e instanceof Error ? `BUG: unexpected ${e.stack ?? e.message}` : `BUG: ${String(e)}`;
    this.oopses.push({ pid, call, message, expected });
    if (expected) printLine(`dmabuf-sim: expected kernel oops in pid ${pid} ${call}, stack not printed: ${e instanceof Error ? e.message : String(e)}`);
    else printLine(`dmabuf-sim: kernel oops in pid ${pid} ${call}: ${message}`);
  }

  /** The releases the call being dispatched started (Kernel.releaseSink while it runs; emptied by reply). */
  private readonly callReleases: Promise<void>[] = [];

  /**
   * Replies to `t` — after the driver releases its call started (`releases`, taken and emptied) have run: the
   * last fput's __fput runs as task_work before the syscall returns to userspace, so close() of a driver's file
   * returns after the driver's release, with the call's own result (close still returns 0: ->release's return is
   * ignored). The wait is a parked call holding no files (the released one has no reference left to hold).
   *
   * Race-free: every release promise was registered before this runs (fput calls asyncRelease synchronously), and
   * blockOnPromise wakes the park whenever they settle, also if that is before park() returns (a promise settles
   * in a later microtask, never inside this call). Bounded: each settles when the driver answers, dies, or is
   * declared dead after driverTimeoutMs (Kernel.asyncRelease); the task's death or shutdown cancels the park.
   */
  private reply(t: Task, ret: number, err: number, releases: Promise<void>[]): void {
    if (releases.length === 0 || t.state === 'dead') {
      // A dead task (exit) has no userspace to return to: its reap waits for the releases (Task.releases).
      releases.length = 0;
      this.finish(t, ret, err);
      return;
    }
    const all = Promise.all(releases.splice(0));
    this.park(
      t,
      blockOnPromise(all, () => {
        if (err !== 0) throw new KernelError(err);
        return ret;
      }),
      false,
    );
  }

  /** Publishes a reply: RES/ERRNO first, then the STATE store the process waits on. */
  finish(t: Task, ret: number, err: number): void {
    t.inFlight = false;
    const ch = t.channel;
    ch.res[0] = ret;
    ch.i32[ERRNO] = err;
    Atomics.store(ch.i32, STATE, ST_REPLY);
    Atomics.notify(ch.i32, STATE, 1);
  }

  /**
   * Parks a blocked call: its retry runs after every wake of its queues (in the task's context) until it yields a
   * result, the timeout fires, or the task dies. Exactly one of those ends it; `end` makes the others no-ops.
   */
  private park(t: Task, b: Blocked, holdFiles = true): void {
    const k = this.k;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    // fdget's references, held while parked: a thread sharing the table may close the fd meanwhile (the file
    // stays until this call ends, as in Linux). Each file once, whatever number of lookups found it.
    const held = holdFiles ? [...new Set(k.callFiles)].map((f) => k.fget(f)) : [];
    if (holdFiles) k.callFiles.length = 0;
    const end = (): void => {
      if (done) return;
      done = true;
      for (const q of b.queues) q.remove(wake);
      if (timer) clearTimeout(timer);
      b.cleanup?.();
      t.parked = null;
      for (const f of held) k.fput(f);
    };
    const settle = (fn: () => number | undefined): void => {
      if (done) return;
      const prev = k.current;
      const prevSink = k.releaseSink;
      // Its own sink: a retry or end()'s puts may drop a last reference (a file another thread closed while this
      // call held it), whose release this call's reply then waits for, as the dispatch does.
      const releases: Promise<void>[] = [];
      k.current = t;
      k.releaseSink = releases;
      try {
        const r = fn();
        if (r === undefined) return;
        end();
        this.reply(t, r, 0, releases);
      } catch (e) {
        end();
        this.reply(t, -1, this.errnoOf(t, e), releases);
      } finally {
        k.current = prev;
        k.releaseSink = prevSink;
      }
    };
    const wake = (): void => settle(b.retry);
    for (const q of b.queues) q.add(wake);
    // A Node timer fires at once (with a TimeoutOverflowWarning) for a delay of 2^31 ms or more, so a long
    // timeout is served in slices; an infinite one arms nothing.
    const arm = (leftMs: number): void => {
      const slice = Math.min(leftMs, MAX_TIMER_MS);
      timer = setTimeout(() => (leftMs > slice ? arm(leftMs - slice) : settle(b.onTimeout)), slice);
    };
    if (b.timeoutMs >= 0 && b.timeoutMs !== Infinity) arm(b.timeoutMs);
    t.parked = {
      blocked: b,
      cancel: () => {
        end();
        t.inFlight = false;
      },
    };
  }

  /** Ends every parked call with `err` (shutdown). */
  /** Calls parked now (observable state for tests: "it is blocked" without sleeping blind). */
  parkedCount(): number {
    let n = 0;
    for (const t of this.scan) if (t.parked) n++;
    return n;
  }

  abortParked(err: number): void {
    for (const t of this.scan) {
      if (!t.parked) continue;
      t.parked.cancel();
      this.finish(t, -1, err);
    }
  }
}

/** The longest delay a Node timer takes as given (2^31 − 1 ms): longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The caller's stack the process put in its channel (recordStacks machines only). */
function readStack(t: Task): string | undefined {
  // A process-written length: clamped to the STACK area.
  const n = Math.min(t.channel.i32[STACK_LEN]!, STACK_SIZE);
  return n > 0 ? Buffer.from(t.channel.stack.subarray(0, n)).toString('utf8') : undefined;
}

/** How long the broker keeps spinning after its last request before it sleeps on the doorbell. */
const SPIN_MS = 0.1;
/** Longest stretch of serving before the event loop gets a turn. */
const SLICE_MS = 2;
/** Longest idle sleep on the doorbell before the broker scans the channels again anyway (ms). */
const IDLE_SLICE_MS = 100;

/**
 * The serve loop. `pump` runs the hot phase; when idle it arms Atomics.waitAsync on the doorbell.
 *
 * Race-freeness of the sleep: the doorbell value is read *before* the final scan. A process posts (STATE store)
 * and then increments the doorbell; so either the scan sees its request, or the increment happens after our read
 * and waitAsync(value) returns at once / is woken by its notify. No request can be left unseen while we sleep.
 */
export class ServeLoop {
  private stopped = false;
  private sleeping = false;
  /** Keeps the worker's event loop alive while waitAsync is pending (waitAsync alone does not, in Node 20). */
  private keepAlive: NodeJS.Timeout | null = setInterval(() => {}, 1 << 30);

  constructor(
    private readonly entry: SyscallEntry,
    private readonly ctl: Int32Array,
  ) {}

  start(): void {
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    if (this.keepAlive) clearInterval(this.keepAlive);
    this.keepAlive = null;
    Atomics.add(this.ctl, DOORBELL, 1);
    Atomics.notify(this.ctl, DOORBELL);
  }

  /** Called by the control plane after it changed kernel state that may complete parked calls. */
  kick(): void {
    if (this.sleeping) {
      Atomics.add(this.ctl, DOORBELL, 1);
      Atomics.notify(this.ctl, DOORBELL);
    }
  }

  private readonly pump = (): void => {
    this.sleeping = false;
    if (this.stopped) return;
    const entry = this.entry;
    const start = performance.now();
    let lastWork = start;
    for (;;) {
      const n = entry.serveAll();
      if (entry.turnWanted) {
        // Promise work is waiting (see SyscallEntry.turnWanted): microtasks run as soon as this returns.
        entry.turnWanted = false;
        setImmediate(this.pump);
        return;
      }
      const now = performance.now();
      if (n > 0) lastWork = now;
      else if (now - lastWork > SPIN_MS) break;
      if (now - start > SLICE_MS) {
        setImmediate(this.pump);
        return;
      }
    }
    const seen = Atomics.load(this.ctl, DOORBELL);
    if (entry.serveAll() > 0) {
      setImmediate(this.pump);
      return;
    }
    // Sliced (IDLE_SLICE_MS): a doorbell lost to a process killed between its STATE store and its ring costs one
    // slice, not the rest of the machine's life; an idle broker wakes a few times a second for it.
    const w = Atomics.waitAsync(this.ctl, DOORBELL, seen, IDLE_SLICE_MS);
    if (!w.async) {
      setImmediate(this.pump);
      return;
    }
    this.sleeping = true;
    void w.value.then(() => {
      this.pump();
    });
  };
}

/**
 * Runs the broker's callbacks of fences another worker (a driver, a process) signalled since the broker last
 * looked, before a syscall is dispatched. In Linux dma_fence_signal runs the callbacks before the signaller goes
 * on, so nothing that happens after a signal — here: a call the signaller, or anyone it told, makes next — sees a
 * dma-buf poll slot still armed on the signalled fence. Two loads when nothing rang (FenceRuntime.pumpIfRung).
 */
function pumpSignalledFences(): void {
  if (!fenceRuntimeAttached()) return;
  try {
    fenceRuntime().pumpIfRung();
  } catch (e) {
    warn(`fence callback threw: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }
}
