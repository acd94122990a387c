/**
 * Machine: the main thread's handle on a simulated system — boots the broker (kernel) worker, spawns processes
 * as workers, and reads kernel state (debugfs, stats, leaks) over the comlink control plane.
 */
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker } from 'node:worker_threads';
import { Comlink, wrap } from './rpc/comlink.js';
import type { KernelControl, KernelStats, ShutdownReport } from './kernel/control-plane.js';
import type { DmaBufSnapshot } from './kernel/dma-buf.js';
import type { DmaHeapInfo } from './kernel/dma-heap.js';
import type { HeapConfig } from './kernel/subsystems.js';
import { formatLeaks } from './kernel/leaks.js';
import { fenceTableSizes } from './fence/table.js';
import { SOCK_STREAM } from './uapi/posix.js';
import { simError } from './errors.js';
import type { ProcessWorkerData } from '../workers/process.js';
import { LOADED, type LoadReport } from './rpc/process-loaded.js';

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
}

export interface SpawnOptions {
  /** comm: the process name in debugfs and reports (default: the module's file name). */
  readonly name?: string;
  /** Arguments for the module's `main`; main runs only when given (use `[]` for none). */
  readonly args?: readonly unknown[];
  /** RLIMIT_NOFILE soft limit (default 1024). */
  readonly nofile?: number;
}

export interface ExitStatus {
  readonly pid: number;
  readonly name: string;
  /** Worker exit code: the process's exit status, 1 after an uncaught error. */
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

/** A running simulated process. */
export class Proc {
  readonly exited: Promise<ExitStatus>;
  private readonly api: Comlink.Remote<ProcessApi>;
  private killed = false;
  private error: Error | undefined;

  constructor(
    readonly pid: number,
    readonly name: string,
    private readonly worker: Worker,
    reap: (pid: number, code: number) => Promise<void>,
  ) {
    this.api = wrap<ProcessApi>(worker);
    worker.on('error', (e) => {
      this.error ??= e;
    });
    this.exited = new Promise((resolve) => {
      worker.once('exit', (code) => {
        void reap(pid, code).then(() =>
          resolve({ pid, name, code, killed: this.killed, ...(this.error ? { error: this.error } : {}) }),
        );
      });
    });
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

  /** Kills the process (worker.terminate): the kernel tears it down as for exit. */
  async kill(): Promise<ExitStatus> {
    this.killed = true;
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

/** INTERNAL: the pid of `p`, checked to be a process of `m` (dmabuf-sim/testing only). */
export function pidIn(m: Machine, p: Proc): number {
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
  private down = false;

  static {
    controlOfMachine = (m, what) => m.live(what);
  }

  private constructor(
    private readonly broker: Worker,
    private readonly kernel: Comlink.Remote<KernelControl>,
    private readonly control: SharedArrayBuffer,
    /** The machine's fence table (src/fence/table.ts): handed to every process and attachable by any worker. */
    private readonly fences: SharedArrayBuffer,
    private readonly recordStacks: boolean,
  ) {}

  /** The control proxy, or ERR_DMABUF_SIM_SHUT_DOWN naming `what` once shutdown() has begun. */
  private live(what: string): Comlink.Remote<KernelControl> {
    if (this.down) throw simError('ERR_DMABUF_SIM_SHUT_DOWN', [what]);
    return this.kernel;
  }

  /** `p`'s pid, after checking this machine spawned it (ERR_DMABUF_SIM_FOREIGN_PROCESS otherwise). */
  private own(p: Proc): number {
    return pidIn(this, p);
  }

  static async boot(opts: BootOptions = {}): Promise<Machine> {
    // Checked here, before a worker starts, so the error is thrown in the caller's thread with its class and code.
    const fences = fenceTableSizes(opts.fences ?? {}, 'fences.');
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
    });
    return new Machine(broker, kernel, control, await kernel.fenceTable(), opts.recordStacks ?? false);
  }

  /** Starts a process running `module` (an ES module URL or path; compiled JavaScript). */
  async spawn(module: URL | string, opts: SpawnOptions = {}): Promise<Proc> {
    this.live('spawn');
    const url = module instanceof URL ? module.href : new URL(module, `file://${process.cwd()}/`).href;
    const name = opts.name ?? url.slice(url.lastIndexOf('/') + 1).replace(/\.[cm]?js$/, '');
    const { port1, port2 } = new MessageChannel();
    const info = await this.kernel.createProcess(name.slice(0, 15), opts.nofile, Comlink.transfer(port1, [port1]));
    const data: ProcessWorkerData = {
      pid: info.pid,
      name,
      channel: info.channel,
      control: this.control,
      fences: this.fences,
      port: port2,
      recordStacks: this.recordStacks,
      module: url,
      args: opts.args ?? null,
    };
    const worker = new Worker(new URL('../workers/process.js', import.meta.url), {
      workerData: data,
      transferList: [port2],
    });
    const p = new Proc(info.pid, name, worker, (pid, code) => this.kernel.reap(pid, code));
    owners.set(p, this);
    this.procs.set(info.pid, p);
    void p.exited.then(() => this.procs.delete(info.pid));
    try {
      await moduleLoaded(worker, p.exited, url);
    } catch (e) {
      await p.kill();
      throw e;
    }
    return p;
  }

  /** debugfs, read from the control plane (processes can open /sys/kernel/debug/... themselves). */
  readonly debugfs = {
    read: async (path: string): Promise<string> => this.live('debugfs.read').debugfsRead(path),
  };

  /**
   * Hands two processes a connected AF_UNIX socketpair (as if each had inherited one end): resolves to
   * [fd in a, fd in b]. `type` is SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET, optionally | SOCK_CLOEXEC / SOCK_NONBLOCK.
   * `a` and `b` may be the same process.
   */
  async socketpair(a: Proc, b: Proc, type: number = SOCK_STREAM): Promise<[number, number]> {
    const k = this.live('socketpair');
    return k.socketpair(this.own(a), this.own(b), type);
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
   * lists every kernel object still alive (a leak, with where it was created) and every kernel oops.
   */
  async shutdown(opts: { quiet?: boolean } = {}): Promise<ShutdownReport> {
    this.live('shutdown');
    this.down = true;
    await this.kernel.beginShutdown();
    await Promise.all([...this.procs.values()].map((p) => p.kill()));
    const report = await this.kernel.finishShutdown();
    this.kernel[Comlink.releaseProxy]();
    await this.broker.terminate();
    if (!opts.quiet && report.leaks.length > 0) process.stderr.write(`dmabuf-sim: ${formatLeaks(report.leaks)}`);
    return report;
  }
}
