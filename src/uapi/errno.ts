/** Linux errno numbers (asm-generic/errno-base.h, errno.h) and their strerror texts. */

export const errnos = {
  EPERM: [1, 'operation not permitted'],
  ENOENT: [2, 'no such file or directory'],
  ESRCH: [3, 'no such process'],
  EINTR: [4, 'interrupted system call'],
  EIO: [5, 'i/o error'],
  ENXIO: [6, 'no such device or address'],
  E2BIG: [7, 'argument list too long'],
  EBADF: [9, 'bad file descriptor'],
  ECHILD: [10, 'no child processes'],
  EAGAIN: [11, 'resource temporarily unavailable'],
  ENOMEM: [12, 'cannot allocate memory'],
  EACCES: [13, 'permission denied'],
  EFAULT: [14, 'bad address'],
  EBUSY: [16, 'device or resource busy'],
  EEXIST: [17, 'file exists'],
  ENODEV: [19, 'no such device'],
  ENOTDIR: [20, 'not a directory'],
  EISDIR: [21, 'is a directory'],
  EINVAL: [22, 'invalid argument'],
  ENFILE: [23, 'too many open files in system'],
  EMFILE: [24, 'too many open files'],
  ENOTTY: [25, 'inappropriate ioctl for device'],
  ENOSPC: [28, 'no space left on device'],
  ESPIPE: [29, 'illegal seek'],
  EROFS: [30, 'read-only file system'],
  EPIPE: [32, 'broken pipe'],
  ERANGE: [34, 'result too large'],
  EDEADLK: [35, 'resource deadlock avoided'],
  ENAMETOOLONG: [36, 'file name too long'],
  ENOSYS: [38, 'function not implemented'],
  ENODATA: [61, 'no data available'],
  ETIME: [62, 'timer expired'],
  EOVERFLOW: [75, 'value too large for defined data type'],
  ENOTSOCK: [88, 'socket operation on non-socket'],
  EMSGSIZE: [90, 'message too long'],
  EPROTOTYPE: [91, 'protocol wrong type for socket'],
  EPROTONOSUPPORT: [93, 'protocol not supported'],
  ESOCKTNOSUPPORT: [94, 'socket type not supported'],
  EOPNOTSUPP: [95, 'operation not supported'],
  EAFNOSUPPORT: [97, 'address family not supported by protocol'],
  ECONNRESET: [104, 'connection reset by peer'],
  ENOTCONN: [107, 'transport endpoint is not connected'],
  ESHUTDOWN: [108, 'cannot send after transport endpoint shutdown'],
  ETIMEDOUT: [110, 'connection timed out'],
  ECONNREFUSED: [111, 'connection refused'],
  EALREADY: [114, 'operation already in progress'],
  ECANCELED: [125, 'operation canceled'],
  EOWNERDEAD: [130, 'owner died'],
} as const satisfies Record<string, readonly [number, string]>;

export type ErrnoCode = keyof typeof errnos;

/** errno number for a code, e.g. errno('EBADF') === 9. */
export function errno(code: ErrnoCode): number {
  return errnos[code][0];
}

const byNumber = new Map<number, ErrnoCode>();
for (const [code, [num]] of Object.entries(errnos) as [ErrnoCode, readonly [number, string]][]) byNumber.set(num, code);

/** Code for an errno number; 'EUNKNOWN' when the model never produces it. */
export function errnoCode(num: number): ErrnoCode | 'EUNKNOWN' {
  return byNumber.get(num) ?? 'EUNKNOWN';
}

export function strerror(num: number): string {
  const code = byNumber.get(num);
  return code ? errnos[code][1] : `unknown error ${num}`;
}

/** Named numeric constants, so kernel code can write `-E.EINVAL` like C. */
export const E: { readonly [K in ErrnoCode]: number } = Object.fromEntries(
  Object.entries(errnos).map(([k, [n]]) => [k, n]),
) as { readonly [K in ErrnoCode]: number };
