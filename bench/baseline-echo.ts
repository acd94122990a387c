/** Worker body for the postMessage baselines: echoes every message straight back (a round trip's other half). */
import { parentPort } from 'node:worker_threads';

const port = parentPort!;
port.on('message', (m: unknown) => port.postMessage(m));
