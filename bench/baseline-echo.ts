/** Worker body for the postMessage baselines: echoes every message back, or acks a `{ ack }` payload with a number. */
import { parentPort } from 'node:worker_threads';

const port = parentPort!;
port.on('message', (m: unknown) => {
  if (typeof m === 'object' && m !== null && 'ack' in m) port.postMessage(0);
  else port.postMessage(m);
});
