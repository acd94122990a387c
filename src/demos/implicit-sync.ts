/** The implicit-sync demo: a display process's CPU read of a dma-buf waits for a GPU process's write fence. */
import { Machine } from '../machine.js';
import { DemoChecks, heading, showText, toStdout, type Out } from './demo-kit.js';
import type { SnapshotInfo } from './implicit-sync-procs.js';

const procs = new URL('./implicit-sync-procs.js', import.meta.url);

/** "1 (signaled) at 12.000345678 s" from SYNC_IOC_FILE_INFO's status and timestamp. */
function statusText(s: SnapshotInfo): string {
  if (s.status === 0) return '0 (active: not signaled yet)';
  const ns = BigInt(s.timestampNs);
  const at = `${ns / 1_000_000_000n}.${(ns % 1_000_000_000n).toString().padStart(9, '0')} s`;
  return s.status > 0 ? `1 (signaled at ${at} on the machine clock)` : `${s.status} (signaled with an error at ${at})`;
}

/**
 * Runs the demo, printing each step with what it shows; returns non-zero if a check failed.
 *
 * What a reader is meant to see in sync/info: the timeline with its pending point before the signal, and the
 * timeline's new value with an empty point list after it — sw_sync unlinks a point from its timeline the moment it
 * signals (sync_timeline_signal), so sync/info never lists a signaled point. The signaled fence is shown where it
 * still exists: in bufinfo (the buffer's reservation keeps it) and in the sync_file the display exported.
 */
export async function implicitSync(out: Out = toStdout): Promise<number> {
  const demo = new DemoChecks(out);
  const check = demo.check;
  out('dmabuf-sim demo implicit-sync');
  out('A "GPU" process renders into a dma-buf behind a fence; a display process reads the same buffer with the CPU.');
  out('Implicit sync: the fence travels with the buffer (its dma_resv), so the display\'s DMA_BUF_IOCTL_SYNC START');
  out('waits in the kernel until the GPU\'s write fence signals — no fence is passed between the processes.');

  heading(out, 'Step 1. Two processes and a socket');
  const m = await Machine.boot();
  const gpu = await m.spawn(procs, { name: 'gpu' });
  const display = await m.spawn(procs, { name: 'display' });
  const [gs, ds] = await m.socketpair(gpu, display);
  out(`gpu is pid ${gpu.pid}, display is pid ${display.pid}; a socketpair connects them (gpu fd ${gs}, display fd ${ds}).`);

  heading(out, 'Step 2. gpu: a buffer with a pending write fence');
  const sub = await gpu.call<{ fd: number; status: number; fenceName: string }>('gpuSubmit', gs);
  out(`gpu allocates a 256 KiB buffer "scanout" from /dev/dma_heap/system (fd ${sub.fd}) and maps it.`);
  out(`It creates a sw_sync timeline "gpu" (value 0) and a fence at point 1 on it: sync_file ${sub.fenceName},`);
  out(`status ${sub.status} (pending). DMA_BUF_IOCTL_IMPORT_SYNC_FILE(WRITE) makes that fence the buffer's write`);
  out('fence, as a GPU driver does when it queues rendering; then gpu sends the buffer\'s fd to the display.');
  showText(out, 'dma_buf/bufinfo — the buffer, and under it its pending write fence ("unsignalled"):', await m.debugfs.read('dma_buf/bufinfo'));
  showText(
    out,
    'sync/info — timeline "gpu" at value 0 with its pending point ("fence active: 1 / 0": point 1, timeline at 0);\n' +
      '  the "fences:" list stays empty, as in mainline (nothing adds sync_files to it):',
    await m.debugfs.read('sync/info'),
  );

  heading(out, 'Step 3. display: receives the buffer; the fence came with it');
  const rcv = await display.call<{ fd: number; pollin: boolean; exported: SnapshotInfo }>('displayReceive', ds);
  out(`display gets the buffer as fd ${rcv.fd}. It never saw the fence, yet the kernel knows it:`);
  check(!rcv.pollin, 'poll(POLLIN, timeout 0) on the dma-buf: not readable while its write fence is pending');
  check(
    rcv.exported.status === 0 && rcv.exported.fences === 1,
    `DMA_BUF_IOCTL_EXPORT_SYNC_FILE(READ) → fd ${rcv.exported.fd}, a sync_file of ${rcv.exported.fences} fence, status ${statusText(rcv.exported)}`,
  );

  heading(out, 'Step 4. display: CPU read waits for the GPU');
  out('display maps the buffer and calls DMA_BUF_IOCTL_SYNC(START|READ): the call blocks in the kernel...');
  const scan = display.call<{ waitedMs: number; wrong: number }>('displayScanout', 0xab);
  await new Promise((r) => setTimeout(r, 50));
  out('...while, 50 ms later, gpu writes 0xab to every byte and SW_SYNC_IOC_INC(1) moves timeline "gpu" to 1,');
  out('which signals point 1, the buffer\'s write fence.');
  await gpu.call('gpuRenderAndSignal', 0xab);
  const res = await scan;
  out(`display's SYNC START returned ${res.waitedMs.toFixed(1)} ms after it was made: only once the fence signaled.`);
  check(res.wrong === 0, `display read the finished frame: ${res.wrong} of 262144 bytes differ from 0xab`);

  heading(out, 'Step 5. After the signal: where the signaled fence shows');
  showText(
    out,
    'sync/info — timeline "gpu" now at 1 and no points: sw_sync unlinks a point from its timeline when it signals\n' +
      '  (sync_timeline_signal), so sync/info lists only pending points:',
    await m.debugfs.read('sync/info'),
  );
  showText(out, 'dma_buf/bufinfo — the buffer\'s reservation still holds the fence, now "signalled":', await m.debugfs.read('dma_buf/bufinfo'));
  const snap = await display.call<SnapshotInfo>('displaySnapshot');
  check(snap.status === 1, `SYNC_IOC_FILE_INFO on the display's sync_file ${snap.name}: status ${statusText(snap)}`);

  heading(out, 'Step 6. Clean up and shut down');
  await gpu.call('gpuDone');
  out('gpu unmaps and closes the buffer and its timeline; the machine shuts down and checks nothing leaked.');
  return demo.finish(m);
}
