/** The implicit-sync demo: a display process's CPU read of a dma-buf waits for a GPU process's write fence. */
import { Machine } from '../machine.js';
import { DemoChecks, indent, toStdout, type Out } from './demo-kit.js';

const procs = new URL('./implicit-sync-procs.js', import.meta.url);

/** Runs the demo, printing each step; returns non-zero if a check failed. */
export async function implicitSync(out: Out = toStdout): Promise<number> {
  const demo = new DemoChecks(out);
  const check = demo.check;
  out('dmabuf-sim implicit-sync demo: a GPU renders behind a fence, the display waits for it through the dma-buf\n');
  const m = await Machine.boot();
  const gpu = await m.spawn(procs, { name: 'gpu' });
  const display = await m.spawn(procs, { name: 'display' });
  const [gs, ds] = await m.socketpair(gpu, display);
  out(`1. gpu (pid ${gpu.pid}) and display (pid ${display.pid}) share a socketpair`);

  const sub = await gpu.call<{ fd: number; status: number; fenceName: string }>('gpuSubmit', gs);
  out(`2. gpu: allocates "scanout", creates sw_sync point 1 (${sub.fenceName}, status ${sub.status}: pending),`);
  out('   DMA_BUF_IOCTL_IMPORT_SYNC_FILE(WRITE) makes it the buffer\'s write fence, passes the fd to the display');
  out('\n  -- bufinfo: the pending write fence is listed under the buffer --');
  out(indent(await m.debugfs.read('dma_buf/bufinfo')));

  const rcv = await display.call<{ fd: number; pollin: boolean; exported: { status: number; fences: number } }>('displayReceive', ds);
  check(!rcv.pollin, `display: poll(POLLIN, 0) on the dma-buf is not ready while the write fence is pending`);
  check(rcv.exported.status === 0 && rcv.exported.fences === 1, `display: EXPORT_SYNC_FILE(READ) snapshots 1 pending fence (status ${rcv.exported.status})`);

  out('3. display: DMA_BUF_IOCTL_SYNC START|READ — blocks in the kernel until the write fence signals');
  const scan = display.call<{ waitedMs: number; wrong: number }>('displayScanout', 0xab);
  await new Promise((r) => setTimeout(r, 50));
  out('4. gpu: writes every byte (50 ms later), then SW_SYNC_IOC_INC signals the fence');
  await gpu.call('gpuRenderAndSignal', 0xab);
  const res = await scan;
  out(`   display: SYNC START returned after ${res.waitedMs.toFixed(1)} ms, once the GPU's fence signaled`);
  check(res.wrong === 0, `display read the finished frame: ${res.wrong} bytes differ from the rendered value`);
  out('\n  -- sync/info: the timeline and its signaled point --');
  out(indent(await m.debugfs.read('sync/info')));

  await gpu.call('gpuDone');
  return demo.finish(m);
}
