/**
 * Argument checks in the manner of Node's own fs, for every JavaScript caller of the project: the process's C
 * library, libsync and libdmabufheap (src/user/), and the main thread's options (Machine.boot, spawn) and table
 * sizes (src/fence/table.ts). For the C library: a JavaScript value no C caller
 * could pass (3.5, NaN, a string, undefined where an int goes) is refused in the process with a TypeError
 * (code ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE) or a RangeError (code ERR_OUT_OF_RANGE) that names the
 * argument in Node's wording, before anything reaches the kernel. Every value a C caller *can* pass gets through
 * unchanged — an int fd of -1, a size_t of -1 (SIZE_MAX), an unknown flag bit — so the kernel answers it with
 * the errno Linux gives.
 *
 * Ranges follow the C types: `int` is [-2^31, 2^31); a 32-bit flag word accepts either view of its bits,
 * [-2^31, 2^32); `size_t`, `unsigned long` and `off_t` accept any integer a 64-bit register holds in either view,
 * [-2^63, 2^64) (a negative size_t is a huge one, as in C). The kernel re-checks every argument it reads from the
 * channel anyway (SyscallRequest's accessors in src/kernel/entry.ts): these checks give a JavaScript caller a
 * clear error, not safety.
 */
import { inspect } from 'node:util';

/** Node's ERR_INVALID_ARG_TYPE: a value of the wrong JavaScript type. */
export class InvalidArgTypeError extends TypeError {
  readonly code = 'ERR_INVALID_ARG_TYPE';
  constructor(name: string, expected: readonly string[], actual: unknown) {
    super(`The ${subject(name)} must be ${expectedTypes(expected)}. Received ${specificType(actual)}`);
  }
}

/** Node's ERR_INVALID_ARG_VALUE: the right type, but a value the function cannot take (a path with a NUL...). */
export class InvalidArgValueError extends TypeError {
  readonly code = 'ERR_INVALID_ARG_VALUE';
  constructor(name: string, actual: unknown, reason = 'is invalid') {
    let shown = inspect(actual);
    if (shown.length > 128) shown = `${shown.slice(0, 128)}...`;
    super(`The ${name.includes('.') ? 'property' : 'argument'} '${name}' ${reason}. Received ${shown}`);
  }
}

/** Node's ERR_OUT_OF_RANGE: a number outside what the argument's C type can hold (or not an integer). */
export class OutOfRangeError extends RangeError {
  readonly code = 'ERR_OUT_OF_RANGE';
  constructor(name: string, range: string, actual: unknown) {
    super(`The value of "${name}" is out of range. It must be ${range}. Received ${receivedNumber(actual)}`);
  }
}

/** "The "fd" argument" / "The "msg.fds[0]" property", as Node words it. */
function subject(name: string): string {
  return `"${name}" ${name.includes('.') ? 'property' : 'argument'}`;
}

/** Node's kTypes: names that read as "of type …" (Object and Function too, lowercased); others are classes. */
const TYPES = new Set(['string', 'function', 'number', 'object', 'Function', 'Object', 'boolean', 'bigint', 'symbol']);

/** Node's list of what was expected: "of type number", "one of type number or string or an instance of Array". */
function expectedTypes(expected: readonly string[]): string {
  const types = expected.filter((e) => TYPES.has(e)).map((e) => e.toLowerCase());
  const instances = expected.filter((e) => !TYPES.has(e));
  // With classes listed too, "object" reads better among them, as Object.
  const obj = types.indexOf('object');
  if (instances.length > 0 && obj >= 0) {
    types.splice(obj, 1);
    instances.push('Object');
  }
  const list = (xs: readonly string[]): string =>
    xs.length > 2 ? `${xs.slice(0, -1).join(', ')}, or ${xs[xs.length - 1]!}` : xs.join(' or ');
  let s = '';
  if (types.length > 0) s += types.length > 1 ? `one of type ${list(types)}` : `of type ${types[0]!}`;
  if (types.length > 0 && instances.length > 0) s += ' or ';
  if (instances.length > 0) s += `an instance of ${list(instances)}`;
  return s;
}

/** Node's determineSpecificType: "undefined", "type string ('3')", "an instance of Object", "function f". */
function specificType(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'function' && value.name) return `function ${value.name}`;
  if (typeof value === 'object') {
    const ctor = (value as { constructor?: { name?: string } }).constructor?.name;
    return ctor ? `an instance of ${ctor}` : inspect(value, { depth: -1 });
  }
  let shown = inspect(value, { colors: false });
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`;
  return `type ${typeof value} (${shown})`;
}

/** Node's ERR_OUT_OF_RANGE "Received" part: big integers with digit separators, the rest inspected. */
function receivedNumber(value: unknown): string {
  if (typeof value === 'number' && Number.isInteger(value) && Math.abs(value) > 2 ** 32) return separated(String(value));
  if (typeof value === 'bigint') {
    const s = String(value);
    return `${value > 2n ** 32n || value < -(2n ** 32n) ? separated(s) : s}n`;
  }
  return inspect(value);
}

function separated(digits: string): string {
  let res = '';
  let i = digits.length;
  const start = digits[0] === '-' ? 1 : 0;
  for (; i >= start + 4; i -= 3) res = `_${digits.slice(i - 3, i)}${res}`;
  return `${digits.slice(0, i)}${res}`;
}

// ---- numbers --------------------------------------------------------------------------------------------------

export const INT32_MIN = -(2 ** 31);
export const INT32_MAX = 2 ** 31 - 1;
const U32_END = 2 ** 32;
const I64_MIN = -(2 ** 63);
const U64_END = 2 ** 64;

/** An integer in [min, max] (both exact doubles); -0 comes back as 0. */
export function validateInteger(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number') throw new InvalidArgTypeError(name, ['number'], value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new OutOfRangeError(name, `an integer >= ${min} && <= ${max}`, value);
  }
  return value === 0 ? 0 : value;
}

/** A C `int` (also an fd: -1 is a value C passes, and the kernel answers it with EBADF). */
export function validateInt(value: unknown, name: string): number {
  return validateInteger(value, name, INT32_MIN, INT32_MAX);
}

/** A file descriptor argument: a C int. `undefined` is refused, never taken to mean fd 0. */
export function validateFd(value: unknown, name = 'fd'): number {
  return validateInt(value, name);
}

/** A 32-bit word of flags or an unsigned int: either view of its bits, [-2^31, 2^32). */
export function validateFlags(value: unknown, name: string): number {
  return validateInteger(value, name, INT32_MIN, U32_END - 1);
}

/** A 16-bit field (pollfd events): either view of its bits, [-2^15, 2^16). */
export function validateShort(value: unknown, name: string): number {
  return validateInteger(value, name, -(2 ** 15), 2 ** 16 - 1);
}

/**
 * A 64-bit register value (size_t, unsigned long, off_t, rlim_t): an integer in [-2^63, 2^64). Above 2^53 a
 * double is still an integer, only a coarse one — the magnitude the kernel's range checks need.
 */
export function validateWord(value: unknown, name: string): number {
  if (typeof value !== 'number') throw new InvalidArgTypeError(name, ['number'], value);
  if (!Number.isInteger(value) || value < I64_MIN || value >= U64_END) {
    throw new OutOfRangeError(name, `an integer >= -(2 ** 63) && < 2 ** 64`, value);
  }
  return value === 0 ? 0 : value;
}

/** A u64 struct field given as a number or a bigint (heap lengths, sync flags, deadlines): its 64 bits. */
export function validateU64(value: unknown, name: string): bigint {
  if (typeof value === 'bigint') {
    if (value < -(2n ** 63n) || value >= 2n ** 64n) throw new OutOfRangeError(name, '>= -(2n ** 63n) && < 2n ** 64n', value);
    return BigInt.asUintN(64, value);
  }
  if (typeof value !== 'number') throw new InvalidArgTypeError(name, ['number', 'bigint'], value);
  return BigInt.asUintN(64, BigInt(validateWord(value, name)));
}

/**
 * A timeout in ms for poll(2) and the sync waits: an integer or ±Infinity. What the C int carries: the value
 * itself when it fits, else -1 (wait forever) — a negative, an infinite or a huge (≥ 2^31 ms, 24.8 days) timeout
 * all mean "wait". NaN and fractions are refused.
 */
export function validateTimeout(value: unknown, name = 'timeout'): number {
  if (typeof value !== 'number') throw new InvalidArgTypeError(name, ['number'], value);
  if (value === Infinity || value === -Infinity) return -1;
  if (!Number.isInteger(value)) throw new OutOfRangeError(name, 'an integer or Infinity', value);
  return value < 0 || value > INT32_MAX ? -1 : value;
}

// ---- everything else ------------------------------------------------------------------------------------------

/** A string argument (names, paths without NUL: see validatePath). */
export function validateString(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new InvalidArgTypeError(name, ['string'], value);
  return value;
}

/** A path: a string with no NUL byte (C would see it end there; Node's fs refuses it the same way). */
export function validatePath(value: unknown, name = 'path'): string {
  const s = validateString(value, name);
  if (s.includes('\u0000')) throw new InvalidArgValueError(name, s, 'must be a string without null bytes');
  return s;
}

/** A byte buffer: any typed array or DataView. */
export function validateBuffer(value: unknown, name: string): ArrayBufferView {
  if (!ArrayBuffer.isView(value)) throw new InvalidArgTypeError(name, ['Buffer', 'TypedArray', 'DataView'], value);
  return value;
}

/** Bytes to send or write: a string (UTF-8) or a byte buffer. */
export function validateData(value: unknown, name: string): string | ArrayBufferView {
  if (typeof value === 'string' || ArrayBuffer.isView(value)) return value;
  throw new InvalidArgTypeError(name, ['string', 'Buffer', 'TypedArray', 'DataView'], value);
}

/** A plain object argument (a struct passed by value: rlimits, msghdr, pollfd). */
export function validateObject(value: unknown, name: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgTypeError(name, ['Object'], value);
  }
  return value as Record<string, unknown>;
}

/** An array argument (pollfd arrays, SCM_RIGHTS fd lists). */
export function validateArray(value: unknown, name: string): readonly unknown[] {
  if (!Array.isArray(value)) throw new InvalidArgTypeError(name, ['Array'], value);
  return value;
}

/** One of a fixed set of strings. */
export function validateOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new InvalidArgValueError(name, value, `must be one of: ${allowed.map((a) => `'${a}'`).join(', ')}`);
  }
  return value as T;
}
