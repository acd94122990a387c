/** Worker entry of the broker thread: the simulated kernel, driven by processes' channels and comlink control. */
import { parentPort } from 'node:worker_threads';
import { expose } from '../src/rpc/comlink.js';
import { KernelControl } from '../src/kernel/control-plane.js';

if (!parentPort) throw new Error('broker must run in a worker thread');
const port = parentPort;
// Worker starts for clone go to the main thread on the same port as comlink's replies (see src/kernel/fork.ts).
const control = new KernelControl((msg, transfer) => port.postMessage(msg, transfer));
expose(control, port, (e, method) => control.errorAtEdge(e, method));
