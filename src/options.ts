/**
 * Validation of the main thread's options (Machine.boot, Machine.spawn), in Node's manner (src/validate.ts): a
 * wrong type is a TypeError with code ERR_INVALID_ARG_TYPE, a number out of range a RangeError with code
 * ERR_OUT_OF_RANGE, an unknown key or a bad name a TypeError with code ERR_INVALID_ARG_VALUE — each naming the
 * field ("options.heaps.reserved.sizeBytes"). Checked in the caller's thread before any worker starts, so nothing
 * is left half-booted and the error keeps its class.
 */
import { SB_SLOTS } from './shm/spin.js';
import { NR_OPEN, PAGE_SIZE } from './uapi/posix.js';
import { THREADS_MAX_LIMIT } from './kernel/kernel.js';
import { InvalidArgTypeError, InvalidArgValueError, validateArray, validateInteger, validateObject, validateString } from './validate.js';

/** Refuses keys of `obj` outside `known` (a misspelt option would otherwise be ignored without a word). */
function knownKeys(obj: Record<string, unknown>, name: string, known: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) throw new InvalidArgValueError(`${name}.${key}`, obj[key], `is not an option (known: ${known.join(', ')})`);
  }
}

function optionalBoolean(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== 'boolean') throw new InvalidArgTypeError(name, ['boolean'], value);
}

/** A name that becomes one path component (a heap under /dev/dma_heap/): non-empty, no '/', no NUL. */
const HEAP_NAME = /^[^/\0]{1,64}$/;

/** Largest carve-out pool: accounting only (each buffer has its own backing), bounded to keep sums exact. */
const MAX_POOL_BYTES = 2 ** 48;

/** Machine.boot's options: throws (see the file comment) on the first bad field. */
export function checkBootOptions(opts: unknown): void {
  const o = validateObject(opts, 'options');
  knownKeys(o, 'options', ['heaps', 'maxSpinners', 'recordStacks', 'fences', 'resv', 'lockdep', 'watchdog', 'hungTaskTimeoutMs', 'threadsMax', 'drivers', 'driverTimeoutMs', 'driverLanes']);
  if (o['heaps'] !== undefined) {
    const heaps = validateObject(o['heaps'], 'options.heaps');
    for (const [name, cfg] of Object.entries(heaps)) {
      const field = `options.heaps.${name}`;
      if (!HEAP_NAME.test(name)) throw new InvalidArgValueError(field, name, 'must be named by 1 to 64 characters, no "/" or NUL (it becomes /dev/dma_heap/<name>)');
      const c = validateObject(cfg, field);
      knownKeys(c, field, ['sizeBytes']);
      if (c['sizeBytes'] !== undefined) validateInteger(c['sizeBytes'], `${field}.sizeBytes`, PAGE_SIZE, MAX_POOL_BYTES);
    }
  }
  if (o['maxSpinners'] !== undefined) validateInteger(o['maxSpinners'], 'options.maxSpinners', 0, SB_SLOTS);
  optionalBoolean(o['recordStacks'], 'options.recordStacks');
  optionalBoolean(o['lockdep'], 'options.lockdep');
  optionalBoolean(o['watchdog'], 'options.watchdog');
  if (o['hungTaskTimeoutMs'] !== undefined) validateInteger(o['hungTaskTimeoutMs'], 'options.hungTaskTimeoutMs', 0, 2 ** 31 - 1);
  if (o['threadsMax'] !== undefined) validateInteger(o['threadsMax'], 'options.threadsMax', 1, THREADS_MAX_LIMIT);
  if (o['fences'] !== undefined) knownKeys(validateObject(o['fences'], 'options.fences'), 'options.fences', ['slots', 'names']);
  if (o['resv'] !== undefined) knownKeys(validateObject(o['resv'], 'options.resv'), 'options.resv', ['objects', 'listBytes']);
  if (o['drivers'] !== undefined) {
    const drivers = validateArray(o['drivers'], 'options.drivers') as unknown[];
    drivers.forEach((d, i) => checkDriverSpec(d, `options.drivers[${i}]`));
  }
  if (o['driverTimeoutMs'] !== undefined) validateInteger(o['driverTimeoutMs'], 'options.driverTimeoutMs', 1, 2 ** 31 - 1);
  optionalBoolean(o['driverLanes'], 'options.driverLanes');
}

/** The environment variable that turns lock validation on or off for every Machine.boot without a `lockdep` option. */
export const LOCKDEP_ENV = 'DMABUF_SIM_LOCKDEP';

/**
 * Whether a Machine.boot without a `lockdep` option validates locks: DMABUF_SIM_LOCKDEP when set ('1', 'on',
 * 'true' / '0', 'off', 'false'; empty counts as unset), else on exactly when NODE_ENV is 'test' (ava, jest and
 * vitest set it in their workers), so a test suite runs with the validator and the watchdog and a program
 * outside tests pays nothing. An explicit `lockdep` option always wins over both. Any other value of the variable
 * is a TypeError (ERR_INVALID_ARG_VALUE) naming it: a misspelt override is never silently ignored.
 */
export function lockdepDefault(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env[LOCKDEP_ENV];
  if (v !== undefined && v !== '') {
    const s = v.trim().toLowerCase();
    if (s === '1' || s === 'on' || s === 'true') return true;
    if (s === '0' || s === 'off' || s === 'false') return false;
    throw new InvalidArgValueError(`process.env.${LOCKDEP_ENV}`, v, "must be one of '1', 'on', 'true', '0', 'off', 'false'");
  }
  return env['NODE_ENV'] === 'test';
}

/** A driver: a built-in name ('vgem'), a module URL, or a path (anything with a '/' or ending in .js). */
export function checkDriverSpec(spec: unknown, name = 'driver'): void {
  if (!(spec instanceof URL) && typeof spec !== 'string') throw new InvalidArgTypeError(name, ['string', 'URL'], spec);
  if (typeof spec === 'string' && (spec.length === 0 || spec.includes('\0'))) throw new InvalidArgValueError(name, spec, 'must be a built-in driver name, a module path or a URL');
}

/** machine.loadDriver's options. */
export function checkDriverOptions(opts: unknown): void {
  const o = validateObject(opts, 'options');
  knownKeys(o, 'options', ['name']);
  if (o['name'] !== undefined) {
    const name = validateString(o['name'], 'options.name');
    if (name.length === 0 || name.includes('\0')) throw new InvalidArgValueError('options.name', name, 'must be a non-empty string without null bytes');
  }
}

/** Machine.spawn's module and options: throws (see the file comment) on the first bad one. */
export function checkSpawnArgs(module: unknown, opts: unknown): void {
  if (!(module instanceof URL) && typeof module !== 'string') throw new InvalidArgTypeError('module', ['string', 'URL'], module);
  const o = validateObject(opts, 'options');
  knownKeys(o, 'options', ['name', 'args', 'nofile', 'kernelFences']);
  optionalBoolean(o['kernelFences'], 'options.kernelFences');
  if (o['name'] !== undefined) {
    const name = validateString(o['name'], 'options.name');
    if (name.length === 0 || name.includes('\0')) throw new InvalidArgValueError('options.name', name, 'must be a non-empty string without null bytes');
  }
  if (o['args'] !== undefined) validateArray(o['args'], 'options.args');
  // fds 0–2 are open from the start, so a limit below 3 could not even hold them; NR_OPEN is the kernel's ceiling.
  if (o['nofile'] !== undefined) validateInteger(o['nofile'], 'options.nofile', 3, NR_OPEN);
}

/**
 * Proc.fork / Proc.thread's module and options (name, args), from the main thread: the same checks as spawn's, so
 * a bad value throws in the caller's thread instead of starting a worker on "file:///<cwd>/undefined".
 */
export function checkCloneArgs(module: unknown, opts: unknown): void {
  if (!(module instanceof URL) && typeof module !== 'string') throw new InvalidArgTypeError('module', ['string', 'URL'], module);
  const o = validateObject(opts, 'options');
  knownKeys(o, 'options', ['name', 'args']);
  if (o['name'] !== undefined) {
    const name = validateString(o['name'], 'options.name');
    if (name.length === 0 || name.includes('\0')) throw new InvalidArgValueError('options.name', name, 'must be a non-empty string without null bytes');
  }
  if (o['args'] !== undefined) validateArray(o['args'], 'options.args');
}
