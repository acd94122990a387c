/** comlink over Node worker_threads: the control plane between the main thread and workers (not the syscall path). */
import * as Comlink from 'comlink';
import type { MessagePort, Worker } from 'node:worker_threads';
import { SimError, SyscallError, type SimErrorCode } from '../errors.js';

export { Comlink };

type NodeSide = Worker | MessagePort;
type Listener = Parameters<Comlink.Endpoint['addEventListener']>[1];

/**
 * Adapts a Node port to comlink's DOM-style Endpoint: Node delivers the message itself where the DOM delivers an
 * event with `.data`, so each listener is wrapped (and the wrapper remembered, so removal finds it).
 */
function endpoint(port: NodeSide): Comlink.Endpoint {
  const wrapped = new WeakMap<object, (data: unknown) => void>();
  return {
    postMessage: (message: unknown, transfer?: unknown[]) =>
      port.postMessage(message, transfer as Parameters<MessagePort['postMessage']>[1]),
    addEventListener: (_type: string, listener: Listener) => {
      const fn = (data: unknown): void => {
        const ev = { data } as MessageEvent;
        if (typeof listener === 'function') listener(ev);
        else listener.handleEvent(ev);
      };
      wrapped.set(listener as object, fn);
      port.on('message', fn);
    },
    removeEventListener: (_type: string, listener: Listener) => {
      const fn = wrapped.get(listener as object);
      if (fn) port.off('message', fn);
    },
  };
}

// ---- errors across the control plane -------------------------------------------------------------------------

/** An error as it crosses a port: the fields a caller matches on, not just the message. */
interface WireError {
  readonly name: string;
  readonly message: string;
  readonly stack?: string;
  readonly code?: string;
  readonly errno?: number;
  readonly syscall?: string;
  readonly cause?: WireError;
}

function toWire(e: Error, depth = 0): WireError {
  const x = e as Error & { code?: unknown; errno?: unknown; syscall?: unknown };
  return {
    name: e.name,
    message: e.message,
    ...(typeof e.stack === 'string' ? { stack: e.stack } : {}),
    ...(typeof x.code === 'string' ? { code: x.code } : {}),
    ...(typeof x.errno === 'number' ? { errno: x.errno } : {}),
    ...(typeof x.syscall === 'string' ? { syscall: x.syscall } : {}),
    ...(e.cause instanceof Error && depth < 3 ? { cause: toWire(e.cause, depth + 1) } : {}),
  };
}

const BUILTIN: Readonly<Record<string, ErrorConstructor>> = { Error, TypeError, RangeError, SyntaxError, ReferenceError };

/**
 * Rebuilds an error on the receiving side with its class where the class is known (SyscallError with code, errno
 * and syscall; SimError with its code; TypeError/RangeError with Node's `code`), so `instanceof` and
 * `{ code: 'EMFILE' }` work on the main thread as they did where it was thrown. Other errors come back as Error
 * with the original name. The stack is the thrower's.
 */
function fromWire(w: WireError): Error {
  const options = w.cause ? { cause: fromWire(w.cause) } : undefined;
  let e: Error;
  if (w.name === 'SyscallError' && w.errno !== undefined) {
    e = new SyscallError(w.errno, w.syscall ?? 'unknown');
  } else if (w.name === 'SimError' && w.code !== undefined) {
    e = new SimError(w.code as SimErrorCode, w.message, options);
  } else {
    e = new (BUILTIN[w.name] ?? Error)(w.message, options);
    if (!BUILTIN[w.name]) e.name = w.name;
    const x = e as Error & { code?: string; errno?: number; syscall?: string };
    if (w.code !== undefined) x.code = w.code;
    if (w.errno !== undefined) x.errno = w.errno;
    if (w.syscall !== undefined) x.syscall = w.syscall;
  }
  e.message = w.message;
  if (w.stack !== undefined) e.stack = w.stack;
  return e;
}

const baseThrow = Comlink.transferHandlers.get('throw')!;
Comlink.transferHandlers.set('throw', {
  canHandle: baseThrow.canHandle,
  serialize(thrown: unknown) {
    const value = (thrown as { value: unknown }).value;
    return [value instanceof Error ? { isError: true, value: toWire(value) } : { isError: false, value }, []];
  },
  deserialize(s: unknown): never {
    const w = s as { isError: boolean; value: unknown };
    throw w.isError ? fromWire(w.value as WireError) : w.value;
  },
});

/**
 * Exposes `api` on `port`. `mapError(e, method)` turns what a method throws into what the caller sees (the
 * kernel's control plane turns a KernelError into a SyscallError naming the operation); it also sees promise
 * rejections. Methods run with `this` = `api`.
 */
export function expose(api: object, port: NodeSide, mapError?: (e: unknown, method: string) => unknown): void {
  if (!mapError) {
    Comlink.expose(api, endpoint(port));
    return;
  }
  const wrapped = new Proxy(api, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop);
      if (typeof v !== 'function' || typeof prop !== 'string') return v;
      return (...args: unknown[]): unknown => {
        let r: unknown;
        try {
          r = (v as (...a: unknown[]) => unknown).apply(target, args);
        } catch (e) {
          throw mapError(e, prop);
        }
        return r instanceof Promise ? r.catch((e: unknown) => Promise.reject(mapError(e, prop))) : r;
      };
    },
  });
  Comlink.expose(wrapped, endpoint(port));
}

export function wrap<T>(port: NodeSide): Comlink.Remote<T> {
  return Comlink.wrap<T>(endpoint(port));
}
