/** Worker entry of the broker thread: the simulated kernel, driven by processes' channels and comlink control. */
import { parentPort } from 'node:worker_threads';
import { expose } from '../src/rpc/comlink.js';
import { KernelControl } from '../src/kernel/control-plane.js';

if (!parentPort) throw new Error('broker must run in a worker thread');
const control = new KernelControl();
expose(control, parentPort, (e, method) => control.errorAtEdge(e, method));
