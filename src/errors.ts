/** SyscallError: how a failed syscall surfaces in a process, shaped like Node's fs errors. */
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
  constructor(errnoNum: number, why?: string) {
    super(`${errnoCode(errnoNum)}${why ? `: ${why}` : ''}`);
    this.name = 'KernelError';
    this.errno = errnoNum;
  }
}
