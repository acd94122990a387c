/** The processes of the lock-inversion demo: one allocates buffers A and B, each asks its device to run a job. */
import * as sys from '../user/index.js';
import { LOCKINV_ARG_BYTES, LOCKINV_IOC_RUN } from './lock-inversion-uapi.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const devs = new Map<string, number>();
const bufs: number[] = [];

/** Allocates buffers "A" and "B" (one page each) from the system heap; returns their fds. */
export function allocBuffers(): [number, number] {
  const heap = sys.heapOpen('system');
  for (const name of ['A', 'B']) {
    const fd = sys.heapAlloc(heap, 4096);
    sys.dmaBufSetName(fd, name);
    bufs.push(fd);
  }
  sys.close(heap);
  return [bufs[0]!, bufs[1]!];
}

/** Runs job `req` on the device at `path` (LOCKINV_IOC_RUN); returns its JSON answer, or { err } with the errno code. */
export function job(path: string, req: Record<string, unknown>): unknown {
  let fd = devs.get(path);
  if (fd === undefined) {
    fd = sys.open(path, sys.O_RDWR);
    devs.set(path, fd);
  }
  const arg = new Uint8Array(LOCKINV_ARG_BYTES);
  arg.set(enc.encode(JSON.stringify(req)));
  try {
    sys.ioctl(fd, LOCKINV_IOC_RUN, arg);
  } catch (e) {
    return { err: (e as { code?: string }).code ?? String(e) };
  }
  const n = arg.indexOf(0);
  return JSON.parse(dec.decode(arg.subarray(0, n < 0 ? arg.length : n)));
}

/** Closes every fd this process opened. */
export function done(): void {
  for (const fd of [...devs.values(), ...bufs.splice(0)]) sys.close(fd);
  devs.clear();
}
