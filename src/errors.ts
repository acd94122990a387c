/**
 * The project's error types: SyscallError (a failed syscall in a process, shaped like Node's fs errors),
 * KernelError (how kernel code returns -errno), and the main thread's table of coded errors (SIM_ERRORS).
 */
import { errnoCode, strerror, type ErrnoCode } from './uapi/errno.js';

/**
 * A syscall that returned -errno. `code` is the symbolic name ('EBADF'), `errno` the Linux number (9) and
 * `syscall` the call that failed ('ioctl'), so tests can assert `{ code: 'EBADF' }` as with Node's fs errors.
 */
export class SyscallError extends Error {
  readonly code: ErrnoCode | 'EUNKNOWN';
  readonly errno: number;
  readonly syscall: string;

  constructor(errnoNum: number, syscall: string, detail?: string) {
    const code = errnoCode(errnoNum);
    super(`${code}: ${strerror(errnoNum)}, ${syscall}${detail ? ` ${detail}` : ''}`);
    this.name = 'SyscallError';
    this.code = code;
    this.errno = errnoNum;
    this.syscall = syscall;
  }
}

/**
 * Thrown inside the simulated kernel to return -errno from the current call; the broker turns it into the reply.
 * Kernel code writes `throw new KernelError(E.EINVAL)` where C writes `return -EINVAL`.
 */
export class KernelError extends Error {
  readonly errno: number;
  /** Why, for diagnostics (never part of the errno contract). */
  readonly why: string | undefined;
  constructor(errnoNum: number, why?: string) {
    super(`${errnoCode(errnoNum)}${why ? `: ${why}` : ''}`);
    this.name = 'KernelError';
    this.errno = errnoNum;
    this.why = why;
  }
}

// ---- the main thread's errors ------------------------------------------------------------------------------------

/**
 * Every error the main-thread API (Machine, Proc, dmabuf-sim/testing) raises for a misuse or a lost process, by
 * code: one table, so a caller can match `{ code }` instead of message text (as piscina's errors.ts does). Kernel
 * answers keep their own shape: a failed kernel operation is a SyscallError (code 'EMFILE', errno, syscall).
 */
export const SIM_ERRORS = {
  /** Any Machine method (or a testing hook) after shutdown() began. */
  ERR_DMABUF_SIM_SHUT_DOWN: (what: string) => `${what}: the machine is shut down`,
  /** spawn(): the process's module could not be imported (not found, syntax error, its top level threw). */
  ERR_DMABUF_SIM_MODULE_LOAD: (module: string, why: string) => `cannot load process module ${module}: ${why}`,
  /** spawn() with `args` of a module with no `main`, or Proc.call() of a name the module does not export. */
  ERR_DMABUF_SIM_NO_EXPORT: (module: string, name: string) => `process module ${module} has no exported function '${name}'`,
  /** A Proc handed to a machine that did not spawn it (socketpair of processes from two machines...), or none did. */
  ERR_DMABUF_SIM_FOREIGN_PROCESS: (pid: number, name: string) => `process ${pid} (${name}) is not a process of this machine`,
  /** A process that has ended (exit, crash, kill) asked to do something, or ended before answering. */
  ERR_DMABUF_SIM_PROCESS_ENDED: (message: string) => message,
  /** debugfs.read() of a file the kernel does not have. */
  ERR_DMABUF_SIM_NO_DEBUGFS_FILE: (path: string, have: string) => `no debugfs file ${path} (have: ${have})`,
  /** Machine.boot({ drivers }) / loadDriver() of a built-in driver name the package does not have. */
  ERR_DMABUF_SIM_NO_DRIVER: (name: string, have: string) => `no built-in driver '${name}' (have: ${have})`,
  /** A driver module that did not load, has no probe(), or whose probe threw. */
  ERR_DMABUF_SIM_DRIVER_LOAD: (module: string, why: string) => `cannot load driver ${module}: ${why}`,
  /** shutdown() of a machine whose kernel (the broker worker) had exited: its workers are ended, there is no report. */
  ERR_DMABUF_SIM_KERNEL_GONE: (what: string) => `${what}: the kernel (broker worker) exited before the machine was shut down; no report`,
  /** testing.kunit() of a case that does not exist. */
  ERR_DMABUF_SIM_NO_KUNIT_CASE: (name: string, have: string) => `no kunit case ${name} (have: ${have})`,
} as const;

export type SimErrorCode = keyof typeof SIM_ERRORS;

/** An error of the main-thread API: `code` is one of SIM_ERRORS' keys. */
export class SimError extends Error {
  readonly code: SimErrorCode;
  constructor(code: SimErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'SimError';
    this.code = code;
  }
}

/** Makes the error `code` with its table message: `simError('ERR_DMABUF_SIM_SHUT_DOWN', ['spawn'])`. */
export function simError<C extends SimErrorCode>(
  code: C,
  args: Parameters<(typeof SIM_ERRORS)[C]>,
  options?: ErrorOptions,
): SimError {
  const fn = SIM_ERRORS[code] as (...a: readonly unknown[]) => string;
  return new SimError(code, fn(...args), options);
}
