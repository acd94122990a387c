/**
 * fork, threads and wait for a simulated process (clone(2), wait4(2)): start a child process with a copy of this
 * process's fd table and mappings, or a thread sharing them, each running a module's `main(...args)` in a new
 * worker; wait for one to end. Arguments are checked the way Node's fs checks them (TypeError
 * ERR_INVALID_ARG_TYPE / RangeError ERR_OUT_OF_RANGE naming the argument); errnos come from the kernel.
 */
import { CLONE_PTHREAD } from '../uapi/posix.js';
import { DATA_SIZE, SYS } from '../shm/channel.js';
import { rt } from './runtime.js';
import { InvalidArgTypeError, OutOfRangeError, validateArray, validateInteger, validateObject, validateString } from '../validate.js';

const enc = new TextEncoder();

/** What the new worker runs. */
export interface CloneOptions {
  /** comm of the new task (default: this process's). */
  readonly name?: string;
  /** Arguments of the module's `main` (JSON values: they cross the syscall channel). Default: none. */
  readonly args?: readonly unknown[];
}

/** What wait returns: the child's pid and its exit status (main's return value or exit()'s code; 1 if it died). */
export interface WaitResult {
  readonly pid: number;
  readonly status: number;
}

/** The spec the kernel receives: an absolute module URL (paths resolve against the working directory, as spawn's). */
function spec(module: unknown, opts: unknown): Uint8Array {
  if (!(typeof module === 'string' || module instanceof URL)) throw new InvalidArgTypeError('module', ['string', 'URL'], module);
  const o = validateObject(opts, 'options') as CloneOptions;
  if (o.name !== undefined) validateString(o.name, 'options.name');
  if (o.args !== undefined) validateArray(o.args, 'options.args');
  const url = module instanceof URL ? module.href : new URL(module, `file://${process.cwd()}/`).href;
  let json: string;
  try {
    json = JSON.stringify({ module: url, args: o.args ?? [], ...(o.name !== undefined ? { name: o.name } : {}) });
  } catch {
    throw new InvalidArgTypeError('options.args', ['Array of JSON values'], o.args);
  }
  const bytes = enc.encode(json);
  if (bytes.length > DATA_SIZE) throw new OutOfRangeError('options.args', `at most ${DATA_SIZE} bytes as JSON`, bytes.length);
  return bytes;
}

/**
 * fork(): a child process running `module`'s `main(...args)` whose fd table is a copy of this one's (same
 * numbers, new references to the same open files, close-on-exec bits kept; later opens and closes on either side
 * are independent), with a copy of this process's mappings (MAP_SHARED: the same memory) and its rlimits.
 * Returns the child's pid; wait for it with waitpid. The child's JavaScript starts fresh: it has the kernel state
 * fork gives, not this worker's variables.
 */
export function fork(module: string | URL, opts: CloneOptions = {}): number {
  return rt().call(SYS.clone, 0, 0, 0, 0, 0, 0, spec(module, opts), 'clone');
}

/**
 * A thread (clone with CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD, as pthread_create): a
 * new worker running `module`'s `main(...args)` that shares this process's fd table (a close in one is seen by the
 * other), mappings and pid (getpid is the same, gettid its own). Its end closes nothing unless it was the last
 * user of the table. Returns its tid; waitpid(tid) joins it (the model's pthread_join). When the process's first
 * thread ends (exit, return from main, death, kill), every thread of the process ends with it (exit_group).
 */
export function thread(module: string | URL, opts: CloneOptions = {}): number {
  return rt().call(SYS.clone, CLONE_PTHREAD, 0, 0, 0, 0, 0, spec(module, opts), 'clone');
}

/**
 * waitpid(pid, options): waits until child `pid` (a process this process forked or a thread it made; -1: any)
 * has ended and everything it held is released, then returns its pid and exit status and forgets it. With
 * WNOHANG returns pid 0 while it still runs. ECHILD if `pid` is not a child of this process or was waited for.
 * Blocks in the kernel (the call is parked; other processes run on).
 */
export function waitpid(pid: number, options = 0): WaitResult {
  validateInteger(pid, 'pid', -(2 ** 31), 2 ** 31 - 1);
  validateInteger(options, 'options', -(2 ** 31), 2 ** 31 - 1);
  const r = rt();
  const got = r.call(SYS.wait4, pid, options, 0, 0, 0, 0, undefined, 'wait4');
  return { pid: got, status: got > 0 ? r.ch.res[1]! : 0 };
}

/** gettid(): this thread's own id (equal to getpid() in a process's first thread). */
export function gettid(): number {
  return rt().tid;
}
