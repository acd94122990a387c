/** comlink over Node worker_threads: the control plane between the main thread and workers (not the syscall path). */
import * as Comlink from 'comlink';
import type { MessagePort, Worker } from 'node:worker_threads';

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

export function expose(api: object, port: NodeSide): void {
  Comlink.expose(api, endpoint(port));
}

export function wrap<T>(port: NodeSide): Comlink.Remote<T> {
  return Comlink.wrap<T>(endpoint(port));
}
