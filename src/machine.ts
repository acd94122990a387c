/**
 * Machine: the main thread's handle on a simulated system — boots the broker (kernel) worker, spawns processes
 * as workers, and reads kernel state (debugfs, stats, leaks) over the comlink control plane.
 */
import { BUG } from './bug.js';
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker } from 'node:worker_threads';
import { Comlink, wrap } from './rpc/comlink.js';
import type { KernelControl, KernelStats, ShutdownReport } from './kernel/control-plane.js';
import type { DmaBufSnapshot } from './kernel/dma-buf.js';
import type { DmaHeapInfo } from './kernel/dma-heap.js';
import type { HeapConfig } from './kernel/subsystems.js';
import { formatLeaks } from './kernel/leaks.js';
import { fenceTableSizes, untrackedOwner } from './fence/table.js';
import { resvTableSizes } from './fence/resv-table.js';
import { CLONE_PTHREAD, SOCK_STREAM } from './uapi/posix.js';
import { simError } from './errors.js';
import { checkBootOptions, checkCloneArgs, checkSpawnArgs, lockdepDefault } from './options.js';
import { InvalidArgTypeError, validateFlags, validateInt, validateString } from './validate.js';
import { AliveTable } from './shm/alive.js';
import { LockDomain, LockWatchdog, fenceTableLookup, lockdepReports, type LockdepReport, type PublishedWait } from './locking/index.js';
import { FenceTable, K_ALIVE, K_KERNEL_OWNER } from './fence/table.js';
import { ARGS_OFFSET, SHUTDOWN as CH_SHUTDOWN, SHUTDOWN_KERNEL_GONE, STATE } from './shm/channel.js';

const CHANNEL_HEADER_WORDS = ARGS_OFFSET / 4;
import type { ProcessWorkerData } from '../workers/process.js';
import { LOADED, PROBING, type LoadReport } from './rpc/process-loaded.js';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checkDriverOptions, checkDriverSpec } from './options.js';
import { B_DOORBELL, G_KERNEL_GONE, H_GONE } from './shm/driver-channel.js';
import type { DriverWorkerData } from '../workers/driver.js';
import type { DriverDeadMessage } from './kernel/driver-host.js';
import type { SpawnRequest } from './kernel/fork.js';

export interface BootOptions {
  /** Heaps under /dev/dma_heap: `{ system: {} }` by default. A `sizeBytes` makes a fixed carve-out pool. */
  readonly heaps?: Readonly<Record<string, HeapConfig>>;
  /** Processes allowed to spin for syscall replies at once (default vCPUs − 1, at least 1). */
  readonly maxSpinners?: number;
  /** Record a JavaScript stack with every kernel object's origin, for leak reports (slower). */
  readonly recordStacks?: boolean;
  /**
   * Fence table sizes: `slots` live fences (default 32768, 2..4194304 — the global stub takes one) and `names`
   * distinct (driver, timeline) name pairs alive at once (default 256, 4..65536). Integers; a bad value throws a
   * RangeError naming the field.
   */
  readonly fences?: { readonly slots?: number; readonly names?: number };
  /**
   * Reservation table sizes (src/fence/resv-table.ts): `objects` dma_resv objects alive at once (default 4096,
   * 1..1048576 — one per dma-buf plus drivers' own) and `listBytes` of fence-list arena shared by them (default
   * 1 MiB, 4096..2^30). Integers; a bad value throws a RangeError naming the field. Full: ENOMEM, loudly.
   */
  readonly resv?: { readonly objects?: number; readonly listBytes?: number };
  /**
   * Lock validation (src/locking): a lock domain every process attaches (its Mutex / WwMutex / fence waits are
   * checked; owner liveness from the machine's alive table). Default: on under a test runner (NODE_ENV 'test', which
   * ava sets), off elsewhere; the environment variable DMABUF_SIM_LOCKDEP=1/0 overrides that default, and this
   * option overrides both (options.ts lockdepDefault). Off costs nothing. Reports no expectation matched are
   * returned by shutdown() (`lockdep`), so a test helper can fail on them.
   */
  readonly lockdep?: boolean;
  /**
   * The real-deadlock watchdog (src/locking/watchdog.ts), in the main thread: a process sleeping on a checked lock
   * or a fence publishes what it waits for; a cycle of waits is reported (kind 'deadlock') and broken within a
   * second by failing one wait with -EDEADLK. Default: on when lock validation is (the `lockdep` option or its
   * default; alone it makes a lock domain with the validator off). Off costs nothing: waits publish only while a
   * watchdog runs, and only when they sleep.
   */
  readonly watchdog?: boolean;
  /**
   * A wait longer than this (ms) in no cycle is reported as 'hung' naming what it waits for and who holds it (the
   * kernel's hung_task_timeout_secs). Integer 0..2^31−1; 0 disables the report. Default 10000.
   */
  readonly hungTaskTimeoutMs?: number;
  /**
   * kernel.threads-max: the most tasks (processes and threads) alive at once beyond which fork and thread fail
   * with EAGAIN (default 256, 1..4096). Every task is a worker thread of the host; spawn() is not limited.
   */
  readonly threadsMax?: number;
  /**
   * Drivers to start at boot, each in its own worker: a built-in name ('vgem': src/drivers/<name>/), or the URL
   * or path of a driver module exporting `probe(drv)` (dmabuf-sim/driver). Boot waits for every probe.
   */
  readonly drivers?: readonly (string | URL)[];
  /** How long a driver may sit on one call from the kernel before it is declared dead (default 10000 ms). */
  readonly driverTimeoutMs?: number;
  /**
   * Driver lanes (default true): a process's ioctls on a driver's file go straight to the driver worker once the
   * kernel granted them (src/shm/driver-lane.ts). false sends every one through the broker — the same results,
   * about twenty times the cost; for comparisons and for debugging the broker's path.
   */
  readonly driverLanes?: boolean;
}

/** One line naming the unexpected lock reports a machine leaves (their full text was printed when each happened). */
export function formatUnexpectedLockdep(reports: readonly LockdepReport[]): string {
  const n = reports.length;
  const keys = reports.slice(0, 4).map((r) => r.key);
  const more = n > keys.length ? `, and ${n - keys.length} more` : '';
  return `${n} unexpected lockdep report${n === 1 ? '' : 's'} (${keys.join('; ')}${more}): label the ones a test provokes with expectLockdepReports`;
}

/** Built-in drivers by name: their module under src/drivers/ (a missing one is ERR_DMABUF_SIM_NO_DRIVER). */
export const BUILTIN_DRIVERS: Readonly<Record<string, string>> = {
  vgem: './drivers/vgem/index.js',
};

/** Where a driver spec's module is: built-in names through BUILTIN_DRIVERS, anything else as a URL or a path. */
function resolveDriver(spec: string | URL): { url: string; name: string } {
  if (spec instanceof URL) return { url: spec.href, name: spec.pathname.replace(/^.*\//, '').replace(/\.[cm]?js$/, '') };
  if (/^[A-Za-z0-9_-]+$/.test(spec)) {
    const rel = BUILTIN_DRIVERS[spec];
    const url = rel ? new URL(rel, import.meta.url) : null;
    if (!url || !existsSync(fileURLToPath(url))) {
      const have = Object.keys(BUILTIN_DRIVERS).filter((n) => existsSync(fileURLToPath(new URL(BUILTIN_DRIVERS[n]!, import.meta.url))));
      throw simError('ERR_DMABUF_SIM_NO_DRIVER', [spec, have.join(', ') || 'none']);
    }
    return { url: url.href, name: spec };
  }
  const url = /^[a-z]+:/.test(spec) ? spec : new URL(spec, `file://${process.cwd()}/`).href;
  return { url, name: url.replace(/^.*\//, '').replace(/\.[cm]?js$/, '') };
}

/** A running driver worker (Machine.boot({ drivers }) / machine.loadDriver). */
export class DriverProc {
  /** Settles when the worker has ended and the kernel released everything the driver held. */
  readonly exited: Promise<{ readonly code: number; readonly killed: boolean }>;
  private killed = false;
  constructor(
    readonly id: number,
    readonly name: string,
    private readonly worker: Worker,
    reap: (id: number) => Promise<void>,
  ) {
    this.exited = new Promise((resolve) => {
      worker.once('exit', (code) => {
        void reap(id).then(() => resolve({ code, killed: this.killed }));
      });
    });
  }
  /** Kills the driver's worker (at whatever instruction it is): its calls fail with ENODEV, its holdings are freed. */
  async kill(): Promise<void> {
    this.killed = true;
    await this.worker.terminate();
    await this.exited;
  }
}

export interface SpawnOptions {
  /** comm: the process name in debugfs and reports (default: the module's file name). */
  readonly name?: string;
  /** Arguments for the module's `main`; main runs only when given (use `[]` for none). */
  readonly args?: readonly unknown[];
  /** RLIMIT_NOFILE soft limit (default 1024). */
  readonly nofile?: number;
  /**
   * This process plays a driver and is trusted with the kernel's fence state (default false): it is handed the
   * fence table's kernel part (names table, alive table, counters, slot allocator) and may create, signal and
   * free fences in its own thread. A plain process attaches the fence table wait-only (libsync's sync_wait fast
   * path); creating a fence there throws FenceWaitOnlyError. For test fixtures that model a device until drivers
   * run as their own workers. Its forks and threads are plain processes.
   */
  readonly kernelFences?: boolean;
}

export interface ExitStatus {
  readonly pid: number;
  readonly name: string;
  /** Worker exit code: the process's exit status, 1 after an uncaught error or a kill. */
  readonly code: number;
  /** The uncaught error that killed it, if any. */
  readonly error?: Error;
  /** True when it was killed with Proc.kill(). */
  readonly killed: boolean;
}

interface ProcessApi {
  call(name: string, args: unknown[]): Promise<unknown>;
}

/**
 * Waits for a new process's report that it imported its module (workers/process.ts posts it before serving any
 * call). Rejects with ERR_DMABUF_SIM_MODULE_LOAD when the import failed or the process ended first, and with
 * ERR_DMABUF_SIM_NO_EXPORT when `args` were given and the module has no `main`; the caller then kills the process.
 */
function moduleLoaded(worker: Worker, exited: Promise<ExitStatus>, module: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onMessage = (msg: unknown): void => {
      const r = (msg as { [LOADED]?: LoadReport } | null)?.[LOADED];
      if (!r) return;
      worker.off('message', onMessage);
      if (r.ok) resolve();
      else if (r.missing !== undefined) reject(simError('ERR_DMABUF_SIM_NO_EXPORT', [module, r.missing]));
      else {
        const cause = Object.assign(new Error(r.message), r.code !== undefined ? { code: r.code } : {});
        reject(simError('ERR_DMABUF_SIM_MODULE_LOAD', [module, r.message], { cause }));
      }
    };
    worker.on('message', onMessage);
    void exited.then((st) => {
      worker.off('message', onMessage);
      const why = st.error ? st.error.message : `exited with status ${st.code}`;
      reject(simError('ERR_DMABUF_SIM_MODULE_LOAD', [module, `the process ended while loading it: ${why}`], st.error ? { cause: st.error } : undefined));
    });
  });
}

/** The default bound on a driver's probe: the kernel's default driverTimeoutMs (src/kernel/driver-host.ts). */
const DEFAULT_PROBE_TIMEOUT_MS = 10_000;
/** The least a probe is given, however short driverTimeoutMs (its downcalls wait for a broker other workers load). */
const PROBE_MIN_MS = 5_000;

/**
 * A driver worker's report that its module loaded and its probe returned (workers/driver.ts). Bounded: a probe
 * still running max(`timeoutMs`, PROBE_MIN_MS) after it started (a loop, a sleep, a promise that never settles)
 * fails the load — the caller kills the worker — so neither loadDriver nor Machine.boot waits for ever on a driver.
 * Importing the module is not timed (on a busy machine that is not the driver's fault; a worker that dies doing
 * it ends the wait).
 */
function driverLoaded(worker: Worker, exited: Promise<unknown>, module: string, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const done = (): void => {
      worker.off('message', onMessage);
      clearTimeout(timer);
    };
    const onMessage = (msg: unknown): void => {
      if ((msg as { [PROBING]?: boolean } | null)?.[PROBING] === true) {
        const ms = Math.max(timeoutMs, PROBE_MIN_MS);
        timer = setTimeout(() => {
          done();
          reject(simError('ERR_DMABUF_SIM_DRIVER_LOAD', [module, `its probe() did not return within ${ms} ms`]));
        }, ms);
        return;
      }
      const r = (msg as { [LOADED]?: LoadReport } | null)?.[LOADED];
      if (!r) return;
      done();
      if (r.ok) resolve();
      else reject(simError('ERR_DMABUF_SIM_DRIVER_LOAD', [module, r.missing !== undefined ? `it exports no ${r.missing}()` : r.message]));
    };
    worker.on('message', onMessage);
    void exited.then(() => {
      done();
      reject(simError('ERR_DMABUF_SIM_DRIVER_LOAD', [module, 'the driver worker ended while loading']));
    });
  });
}

/** Whether a cloned task's module loaded (see moduleLoaded), for the Proc.fork/thread call that made it. */
const cloneLoaded = new WeakMap<Proc, Promise<void>>();

/** What a forked child or a thread runs: its module's `main(...args)`. */
export interface CloneOptions {
  /** comm of the new task (default: the caller's). */
  readonly name?: string;
  /** Arguments of the module's `main` (JSON values). Default: none. */
  readonly args?: readonly unknown[];
}

/** How a Proc asks its machine for a fork or a thread of itself. */
type Cloner = (parent: Proc, flags: number, module: URL | string, opts: CloneOptions) => Promise<Proc>;

/**
 * A running simulated process — or one thread of it (Proc.thread): `pid` is the task's own id (gettid), `tgid` its
 * process's (getpid).
 */
export class Proc {
  readonly exited: Promise<ExitStatus>;
  private readonly api: Comlink.Remote<ProcessApi>;
  private killed = false;
  private error: Error | undefined;
  /** getpid() of this task: its own pid for a process, the first thread's for a thread. */
  readonly tgid: number;
  /** The other threads of this process, when this is its first thread: they end with it (exit_group). */
  private readonly threads = new Set<Proc>();
  private readonly cloner: Cloner | null;
  private ended = false;

  constructor(
    readonly pid: number,
    readonly name: string,
    private readonly worker: Worker,
    reap: (pid: number, code: number, killed: boolean) => Promise<void>,
    opts: { readonly tgid?: number; readonly clone?: Cloner } = {},
  ) {
    this.tgid = opts.tgid ?? pid;
    this.cloner = opts.clone ?? null;
    this.api = wrap<ProcessApi>(worker);
    worker.on('error', (e) => {
      this.error ??= e;
    });
    this.exited = new Promise((resolve) => {
      worker.once('exit', (code) => {
        // exit_group: the process's first thread ending (exit, return from main, crash, kill) ends every thread.
        // The process is gone once all its threads are: `exited` of the first thread settles after theirs.
        this.ended = true;
        const threads = [...this.threads].map((th) => th.kill());
        // A worker terminated before it came online reports 0: a kill is a failure whenever it lands.
        const status = this.killed && code === 0 ? 1 : code;
        void Promise.all([reap(pid, status, this.killed), ...threads]).then(() =>
          resolve({ pid, name, code: status, killed: this.killed, ...(this.error ? { error: this.error } : {}) }),
        );
      });
    });
  }

  /** Records `th` as a thread of this process (its first thread): killed when this one ends. */
  adoptThread(th: Proc): void {
    if (this.ended) {
      void th.kill();
      return;
    }
    this.threads.add(th);
    void th.exited.then(() => this.threads.delete(th));
  }

  /**
   * fork() in this process, from the main thread: a child process running `module`'s `main(...args)` with a copy of
   * this process's fd table and mappings (see fork in dmabuf-sim/process). It is this process's child: its waitpid
   * can wait for it; here, the returned Proc's `exited` settles once the child is torn down.
   */
  fork(module: URL | string, opts: CloneOptions = {}): Promise<Proc> {
    checkCloneArgs(module, opts);
    if (!this.cloner) throw simError('ERR_DMABUF_SIM_FOREIGN_PROCESS', [this.pid, this.name]);
    return this.cloner(this, 0, module, opts);
  }

  /**
   * A thread of this process, from the main thread (clone with CLONE_FILES and the rest of pthread_create's flags):
   * a new worker running `module`'s `main(...args)` sharing this process's fd table, mappings and pid. It ends
   * with the process's first thread; its own end closes nothing unless it was the table's last user.
   */
  thread(module: URL | string, opts: CloneOptions = {}): Promise<Proc> {
    checkCloneArgs(module, opts);
    if (!this.cloner) throw simError('ERR_DMABUF_SIM_FOREIGN_PROCESS', [this.pid, this.name]);
    return this.cloner(this, CLONE_PTHREAD, module, opts);
  }

  /**
   * Runs the module's exported function `fn(...args)` inside the process and returns its result. Rejects if the
   * function throws, or if the process ends (exit, crash, kill) before answering — a call to a dead process
   * fails at once instead of waiting forever.
   */
  call<R = unknown>(fn: string, ...args: unknown[]): Promise<R> {
    const died = this.exited.then((st): never => {
      const why = st.error ? `died: ${st.error.message}` : st.killed ? 'was killed' : `exited with status ${st.code}`;
      throw simError('ERR_DMABUF_SIM_PROCESS_ENDED', [`process ${st.pid} (${st.name}) ${why} before ${fn}() returned`], st.error ? { cause: st.error } : undefined);
    });
    return Promise.race([this.api.call(fn, args) as Promise<R>, died]);
  }

  /** Waits for the process to end; rejects if it died of an error or exited non-zero. */
  async join(): Promise<void> {
    const st = await this.exited;
    if (st.error) throw simError('ERR_DMABUF_SIM_PROCESS_ENDED', [`process ${st.pid} (${st.name}) died: ${st.error.message}`], { cause: st.error });
    if (st.code !== 0) throw simError('ERR_DMABUF_SIM_PROCESS_ENDED', [`process ${st.pid} (${st.name}) exited with status ${st.code}`]);
  }

  /**
   * Kills the process (worker.terminate): the kernel tears it down as for exit. Killing a process's first thread kills
   * every thread of it, and the returned status comes once they are all gone; killing another thread kills just it.
   */
  async kill(): Promise<ExitStatus> {
    if (!this.ended) this.killed = true;
    await this.worker.terminate();
    return this.exited;
  }
}

/** Which machine spawned each process (a Proc handed to another machine is refused). */
const owners = new WeakMap<Proc, Machine>();

/** The control-plane proxy behind a machine, for src/testing.ts (set in Machine's static block). */
let controlOfMachine: (m: Machine, what: string) => Comlink.Remote<KernelControl>;

/**
 * INTERNAL (dmabuf-sim/testing only; not exported by the package's entry): the kernel control proxy of `m`, for
 * test hooks; throws ERR_DMABUF_SIM_SHUT_DOWN (naming `what`) after shutdown began.
 */
export function controlOf(m: Machine, what: string): Comlink.Remote<KernelControl> {
  return controlOfMachine(m, what);
}

/**
 * INTERNAL: the pid of `p`, checked to be a Proc (ERR_INVALID_ARG_TYPE naming `name` otherwise) and a process of
 * `m` (dmabuf-sim/testing and the Machine's own methods).
 */
export function pidIn(m: Machine, p: Proc, name = 'proc'): number {
  if (!(p instanceof Proc)) throw new InvalidArgTypeError(name, ['Proc'], p);
  if (owners.get(p) !== m) throw simError('ERR_DMABUF_SIM_FOREIGN_PROCESS', [p.pid, p.name]);
  return p.pid;
}

/**
 * A simulated machine. Its surface is these methods: the kernel's control object stays behind them (test and
 * driver hooks are in dmabuf-sim/testing). After shutdown() has begun, every method rejects with
 * ERR_DMABUF_SIM_SHUT_DOWN.
 */
export class Machine {
  private readonly procs = new Map<number, Proc>();
  private readonly driverProcs = new Map<number, DriverProc>();
  /** Every live process's syscall channel (marked when the broker dies). */
  private readonly channels = new Set<SharedArrayBuffer>();
  private down = false;
  /** The machine's lock domain when booted with `lockdep` or `watchdog` (src/locking/domain.ts). */
  private lockDomain: LockDomain | null = null;
  private watchdog: LockWatchdog | null = null;
  /** How long a driver's probe may take (Machine.boot's driverTimeoutMs, as for one call into a driver). */
  private probeTimeoutMs = DEFAULT_PROBE_TIMEOUT_MS;

  /**
   * Lock validation: the domain processes attach (null when off), every report so far (the validator's and the
   * watchdog's), the waits processes publish now, and the watchdog (null when off).
   */
  readonly lockdep = {
    domain: (): LockDomain | null => this.lockDomain,
    reports: (): LockdepReport[] => (this.lockDomain ? lockdepReports(this.lockDomain) : []),
    waits: (): PublishedWait[] => this.watchdog?.waits() ?? [],
    watchdog: (): LockWatchdog | null => this.watchdog,
  };

  static {
    controlOfMachine = (m, what) => m.live(what);
  }

  /** Settles when the broker worker (the kernel) has exited, for whatever reason. */
  private readonly brokerExited: Promise<void>;

  /**
   * Reaps a process whose worker ended (the kernel's teardown). With the kernel gone there is nothing left to tear
   * down — its tables died with it — so a process's `exited` (and kill()) settles instead of waiting forever.
   */
  private readonly reap = (pid: number, code: number, killed: boolean): Promise<void> =>
    Promise.race([this.kernel.reap(pid, code, killed), this.brokerExited]);

  private constructor(
    private readonly broker: Worker,
    private readonly kernel: Comlink.Remote<KernelControl>,
    private readonly control: SharedArrayBuffer,
    /** The machine's fence table (src/fence/table.ts): handed to every process and attachable by any worker. */
    private readonly fences: SharedArrayBuffer,
    /** The fence table's kernel state: handed only to processes spawned with { kernelFences: true }. */
    private readonly fenceKernel: SharedArrayBuffer,
    private readonly recordStacks: boolean,
    private readonly maxSpinners: number,
    /**
     * The reservation table (src/fence/resv-table.ts) and the kernel lock domain its locks live in: kernel-side
     * workers only (the main thread, drivers, { kernelFences: true } processes), never a plain process.
     */
    private readonly resvTable: SharedArrayBuffer,
    private readonly kernelLocks: SharedArrayBuffer,
  ) {
    // The broker's death, told to each process in its own channel (SHUTDOWN_KERNEL_GONE): a process waiting for a
    // reply then gives up. Per channel, so no process can make another's calls give up.
    this.brokerExited = new Promise((resolve) => broker.once('exit', () => resolve()));
    broker.once('exit', () => {
      for (const ch of this.channels) {
        const i32 = new Int32Array(ch, 0, CHANNEL_HEADER_WORDS);
        Atomics.store(i32, CH_SHUTDOWN, SHUTDOWN_KERNEL_GONE);
        Atomics.notify(i32, STATE);
      }
    });
    // Tasks made by clone (a process's fork or thread, or Proc.fork/thread): the broker made the task and asks for its
    // worker on its own port, before the clone's reply, so by the time any caller learns the pid its Proc exists.
    broker.on('message', (m: unknown) => {
      if ((m as Partial<SpawnRequest> | null)?.kind === 'dmabuf-sim:spawn') this.startCloned(m as SpawnRequest);
      // A driver the kernel declared dead (it stopped answering): its worker goes, and is reaped as any exit.
      if ((m as Partial<DriverDeadMessage> | null)?.kind === 'dmabuf-sim:driver-dead') void this.driverProcs.get((m as DriverDeadMessage).id)?.kill();
    });
    broker.once('exit', () => {
      for (const [ch, bellSab] of this.driverChannels) {
        Atomics.store(new Int32Array(ch, 0, 16), H_GONE, G_KERNEL_GONE);
        const bell = new Int32Array(bellSab);
        Atomics.add(bell, B_DOORBELL, 1);
        Atomics.notify(bell, B_DOORBELL);
      }
    });
  }

  /** The control proxy, or ERR_DMABUF_SIM_SHUT_DOWN naming `what` once shutdown() has begun. */
  private live(what: string): Comlink.Remote<KernelControl> {
    if (this.down) throw simError('ERR_DMABUF_SIM_SHUT_DOWN', [what]);
    return this.kernel;
  }

  /** `p`'s pid, after checking this machine spawned it (ERR_DMABUF_SIM_FOREIGN_PROCESS otherwise). */
  private own(p: Proc, name: string): number {
    return pidIn(this, p, name);
  }

  static async boot(opts: BootOptions = {}): Promise<Machine> {
    // Checked here, before a worker starts, so the error is thrown in the caller's thread with its class and code.
    checkBootOptions(opts);
    const lockdep = opts.lockdep ?? lockdepDefault();
    const watch = opts.watchdog ?? lockdep;
    const fences = fenceTableSizes(opts.fences ?? {}, 'options.fences.');
    const resv = resvTableSizes(opts.resv ?? {}, 'options.resv.');
    const broker = new Worker(new URL('../workers/broker.js', import.meta.url));
    broker.on('error', (e) => {
      process.stderr.write(`dmabuf-sim: broker died: ${e.stack ?? e.message}\n`);
    });
    const kernel = wrap<KernelControl>(broker);
    const maxSpinners = opts.maxSpinners ?? Math.max(1, availableParallelism() - 1);
    const control = await kernel.boot({
      heaps: opts.heaps ?? { system: {} },
      maxSpinners,
      recordStacks: opts.recordStacks ?? false,
      fences,
      resv,
      lockdep,
      watchdog: watch,
      ...(opts.threadsMax !== undefined ? { threadsMax: opts.threadsMax } : {}),
      ...(opts.driverTimeoutMs !== undefined ? { driverTimeoutMs: opts.driverTimeoutMs } : {}),
      ...(opts.driverLanes !== undefined ? { driverLanes: opts.driverLanes } : {}),
    });
    const table = await kernel.fenceTable();
    const fenceKernel = await kernel.fenceKernelState();
    // The broker's token in the alive table goes with it (locks it held are recovered, not waited for).
    const kernelOwner = Atomics.load(new Int32Array(fenceKernel), K_KERNEL_OWNER);
    const alive = new AliveTable(new Int32Array(fenceKernel), K_ALIVE);
    broker.once('exit', () => alive.clear(kernelOwner));
    const { table: resvTable, locks } = await kernel.resvTable();
    const m = new Machine(broker, kernel, control, table, fenceKernel, opts.recordStacks ?? false, maxSpinners, resvTable, locks);
    if (opts.driverTimeoutMs !== undefined) m.probeTimeoutMs = opts.driverTimeoutMs;
    // The kernel lock domain (the broker made it: reservation locks live in it; with lockdep: true the validator
    // runs in it too). The main thread's owner is untracked (never presumed dead); it sees who died in the alive table.
    const domain = LockDomain.attach(locks, 'main', { owner: untrackedOwner(), liveness: alive });
    if (lockdep || watch) {
      // The main thread uses the machine's domain for the locks it makes and hands to processes (reap clears a dead
      // process's token in the alive table: its locks and its published wait are let go).
      m.lockDomain = domain;
      LockDomain.setCurrent(m.lockDomain);
      if (watch) {
        const fenceLookup = fenceTableLookup(new FenceTable(table, fenceKernel));
        m.watchdog = new LockWatchdog(m.lockDomain, { fences: fenceLookup, ...(opts.hungTaskTimeoutMs !== undefined ? { hungTaskTimeoutMs: opts.hungTaskTimeoutMs } : {}) }).start();
      }
    }
    try {
      for (const d of opts.drivers ?? []) await m.loadDriver(d);
    } catch (e) {
      await m.shutdown({ quiet: true });
      throw e;
    }
    return m;
  }

  /** Driver channels of live drivers, with their bells (marked and rung when the broker dies). */
  private readonly driverChannels = new Map<SharedArrayBuffer, SharedArrayBuffer>();

  /**
   * Starts a driver in its own worker: `spec` is a built-in name ('vgem') or a driver module's URL or path. Resolves
   * once its probe() returned (its device nodes exist then); rejects with ERR_DMABUF_SIM_NO_DRIVER for an unknown
   * built-in name and ERR_DMABUF_SIM_DRIVER_LOAD when the module does not load, has no probe, its probe throws or
   * does not return within driverTimeoutMs (at least 5 s; the worker is killed then).
   */
  async loadDriver(spec: string | URL, opts: { readonly name?: string } = {}): Promise<DriverProc> {
    const kernel = this.live('loadDriver');
    checkDriverSpec(spec);
    checkDriverOptions(opts);
    const { url, name: base } = resolveDriver(spec);
    const name = opts.name ?? base;
    const { port1, port2 } = new MessageChannel();
    const info = await kernel.createDriver(name, Comlink.transfer(port1, [port1]));
    const data: DriverWorkerData = {
      id: info.id,
      name,
      channel: info.channel,
      bell: info.bell,
      directory: info.directory,
      control: this.control,
      port: port2,
      maxSpinners: this.maxSpinners,
      owner: info.owner,
      fenceAttachId: info.fenceAttachId,
      module: url,
      fences: this.fences,
      fenceKernel: this.fenceKernel,
      locks: this.kernelLocks,
      resv: this.resvTable,
      lockdep: this.lockDomain !== null,
    };
    const worker = new Worker(new URL('../workers/driver.js', import.meta.url), { workerData: data, transferList: [port2] });
    const d = new DriverProc(info.id, name, worker, (id) => Promise.race([this.kernel.reapDriver(id), this.brokerExited]));
    this.driverProcs.set(info.id, d);
    this.driverChannels.set(info.channel, info.bell);
    void d.exited.then(() => {
      this.driverProcs.delete(info.id);
      this.driverChannels.delete(info.channel);
    });
    try {
      await driverLoaded(worker, d.exited, url, this.probeTimeoutMs);
    } catch (e) {
      await d.kill();
      throw e;
    }
    return d;
  }

  /** The live drivers. */
  drivers(): DriverProc[] {
    return [...this.driverProcs.values()];
  }

  /** Starts a process running `module` (an ES module URL or path; compiled JavaScript). */
  async spawn(module: URL | string, opts: SpawnOptions = {}): Promise<Proc> {
    this.live('spawn');
    checkSpawnArgs(module, opts);
    const url = module instanceof URL ? module.href : new URL(module, `file://${process.cwd()}/`).href;
    const name = opts.name ?? url.slice(url.lastIndexOf('/') + 1).replace(/\.[cm]?js$/, '');
    const { port1, port2 } = new MessageChannel();
    const info = await this.kernel.createProcess(name.slice(0, 15), opts.nofile, Comlink.transfer(port1, [port1]));
    const data: ProcessWorkerData = {
      pid: info.pid,
      name,
      channel: info.channel,
      control: this.control,
      maxSpinners: this.maxSpinners,
      fences: this.fences,
      ...(opts.kernelFences === true ? { fenceKernel: this.fenceKernel, resv: this.resvTable, kernelLocks: this.kernelLocks } : {}),
      port: port2,
      owner: info.owner,
      recordStacks: this.recordStacks,
      module: url,
      args: opts.args ?? null,
      ...(this.lockDomain ? { locks: this.lockDomain.sab } : {}),
    };
    const worker = new Worker(new URL('../workers/process.js', import.meta.url), {
      workerData: data,
      transferList: [port2],
    });
    const p = new Proc(info.pid, name, worker, this.reap, { clone: this.cloner });
    owners.set(p, this);
    this.procs.set(info.pid, p);
    this.channels.add(info.channel);
    void p.exited.then(() => {
      this.procs.delete(info.pid);
      this.channels.delete(info.channel);
    });
    try {
      await moduleLoaded(worker, p.exited, url);
    } catch (e) {
      await p.kill();
      // shutdown() began meanwhile and killed it: that, not its module, is why it ended.
      if (this.down) throw simError('ERR_DMABUF_SIM_SHUT_DOWN', ['spawn'], { cause: e });
      throw e;
    }
    return p;
  }

  /** The live process or thread with this pid/tid — including children forked and threads made inside processes. */
  process(pid: number): Proc | undefined {
    return this.procs.get(validateInt(pid, 'pid'));
  }

  private readonly cloner: Cloner = async (parent, flags, module, opts) => {
    const kernel = this.live(flags ? 'thread' : 'fork');
    const url = module instanceof URL ? module.href : new URL(module, `file://${process.cwd()}/`).href;
    const pid = await kernel.clone(parent.pid, flags, { module: url, args: opts.args ?? [], ...(opts.name !== undefined ? { name: opts.name } : {}) });
    const p = this.procs.get(pid);
    if (!p) BUG(`no worker started for clone ${pid}`);
    // As spawn: the call settles once the clone's module loaded, and rejects when it did not (the clone exits with
    // status 1 by itself — it is its parent's child, whose waitpid sees that status).
    await cloneLoaded.get(p);
    return p;
  };

  /**
   * Starts the worker of a task clone made (fork.ts SpawnRequest). The main thread owns every process worker, so
   * its exit is reaped here like a spawned one's, whatever became of its parent; a thread is also recorded with its
   * process's first thread, and dies with it. Runs even during shutdown: the worker is then killed with the rest.
   */
  private startCloned(req: SpawnRequest): void {
    const data: ProcessWorkerData = {
      pid: req.tgid,
      tid: req.tid,
      name: req.name,
      channel: req.channel,
      control: this.control,
      maxSpinners: this.maxSpinners,
      fences: this.fences,
      port: req.port,
      ...(req.owner !== undefined ? { owner: req.owner } : {}),
      recordStacks: this.recordStacks,
      module: req.module,
      args: req.args,
      cloned: true,
      ...(this.lockDomain ? { locks: this.lockDomain.sab } : {}),
    };
    const worker = new Worker(new URL('../workers/process.js', import.meta.url), { workerData: data, transferList: [req.port] });
    const p = new Proc(req.tid, req.name, worker, this.reap, { tgid: req.tgid, clone: this.cloner });
    owners.set(p, this);
    // Awaited by Proc.fork/thread (the cloner); a clone made inside a process has nobody waiting on it.
    const loaded = moduleLoaded(worker, p.exited, req.module);
    loaded.catch(() => {});
    cloneLoaded.set(p, loaded);
    this.procs.set(req.tid, p);
    this.channels.add(req.channel);
    void p.exited.then(() => {
      this.procs.delete(req.tid);
      this.channels.delete(req.channel);
    });
    if (req.thread) {
      const leader = this.procs.get(req.tgid);
      // No first thread any more: the process ended while its thread was being made.
      if (leader) leader.adoptThread(p);
      else void p.kill();
    }
  }

  /** debugfs, read from the control plane (processes can open /sys/kernel/debug/... themselves). */
  readonly debugfs = {
    read: async (path: string): Promise<string> => this.live('debugfs.read').debugfsRead(validateString(path, 'path')),
  };

  /**
   * Hands two processes a connected AF_UNIX socketpair (as if each had inherited one end): resolves to
   * [fd in a, fd in b]. `type` is SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET, optionally | SOCK_CLOEXEC / SOCK_NONBLOCK.
   * `a` and `b` may be the same process.
   */
  async socketpair(a: Proc, b: Proc, type: number = SOCK_STREAM): Promise<[number, number]> {
    const k = this.live('socketpair');
    // The type is a C int of flag bits: either view of its 32 bits reaches the kernel, which answers as Linux.
    return k.socketpair(this.own(a, 'a'), this.own(b, 'b'), validateFlags(type, 'type'));
  }

  /** The heaps under /dev/dma_heap, sorted by name, with their usage (a listing of the directory). */
  async heaps(): Promise<DmaHeapInfo[]> {
    return this.live('heaps').heaps();
  }

  /** Android's dmabuf_dump view of the machine (per-process Rss/Pss and the buffer × process table). */
  async dmabufDump(): Promise<string> {
    return this.live('dmabufDump').debugfsRead('dmabuf_dump');
  }

  /** Every live dma-buf, newest first, as plain data (sizes, names, refcounts, attachments, SYNC counts). */
  async dmabufs(): Promise<DmaBufSnapshot[]> {
    return this.live('dmabufs').dmabufs();
  }

  /** Live kernel objects by kind and the number of processes. */
  async stats(): Promise<KernelStats> {
    return this.live('stats').stats();
  }

  /**
   * Shuts down: blocked syscalls fail with ESHUTDOWN, remaining processes are killed and torn down, and the report
   * lists every kernel object still alive (a leak, with where it was created), every kernel oops and WARN, and every
   * lock report no expectation matched (`lockdep`: each was printed in full when it happened; unless `quiet`, one
   * more line counts them here, as leaks are printed). Rejects with ERR_DMABUF_SIM_KERNEL_GONE, once every
   * process and driver worker has ended, when the kernel itself had exited.
   */
  async shutdown(opts: { quiet?: boolean } = {}): Promise<ShutdownReport> {
    this.live('shutdown');
    this.down = true;
    this.watchdog?.stop();
    if (this.lockDomain && LockDomain.current() === this.lockDomain) LockDomain.setCurrent(null);
    // A kernel that already exited (crashed, terminated) answers nothing: every control-plane call is raced with
    // its exit, the workers are ended all the same, and shutdown rejects instead of waiting forever.
    const GONE: unique symbol = Symbol('kernel gone');
    const orGone = <T>(p: Promise<T>): Promise<T | typeof GONE> => Promise.race([p, this.brokerExited.then((): typeof GONE => GONE)]);
    const begun = await orGone(this.kernel.beginShutdown());
    await Promise.all([...this.procs.values()].map((p) => p.kill()));
    // Then the driver releases still in flight (bounded: control-plane settleReleases), so the drivers free what
    // the last puts released before they are stopped and the leaks counted.
    if (begun !== GONE) await orGone(this.kernel.settleReleases());
    // Drivers after the processes: a process's last close may still need its driver's release.
    await Promise.all([...this.driverProcs.values()].map((d) => d.kill()));
    const kernelReport = begun === GONE ? GONE : await orGone(this.kernel.finishShutdown());
    this.kernel[Comlink.releaseProxy]();
    await this.broker.terminate();
    if (kernelReport === GONE) throw simError('ERR_DMABUF_SIM_KERNEL_GONE', ['shutdown']);
    // Every worker has ended: nothing records into the domain any more.
    const lockdep = this.lockDomain ? lockdepReports(this.lockDomain).filter((r) => r.expected !== true) : [];
    const report: ShutdownReport = { ...kernelReport, lockdep };
    if (!opts.quiet && report.leaks.length > 0) process.stderr.write(`dmabuf-sim: ${formatLeaks(report.leaks)}`);
    if (!opts.quiet && lockdep.length > 0) process.stderr.write(`dmabuf-sim: ${formatUnexpectedLockdep(lockdep)}\n`);
    return report;
  }
}
