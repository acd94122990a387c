/** The flagship demo: a camera process shares a heap frame with a viewer process by passing its fd, zero copy. */
import { Machine } from '../machine.js';
import { DemoChecks, indent, toStdout, type Out } from './demo-kit.js';

const procs = new URL('./flagship-procs.js', import.meta.url);

/**
 * Runs the demo, printing each step. Returns a non-zero status if anything the demo checks went wrong
 * (a pixel mismatch, a missing acknowledgement, a leak).
 */
export async function flagship(out: Out = toStdout): Promise<number> {
  const demo = new DemoChecks(out);
  const check = demo.check;
  const bufinfo = async (m: Machine, when: string): Promise<void> => {
    out(`\n  -- /sys/kernel/debug/dma_buf/bufinfo ${when} --`);
    out(indent(await m.debugfs.read('dma_buf/bufinfo')));
  };

  out('dmabuf-sim flagship demo: camera → viewer over a unix socket, one dma-buf, zero copy\n');
  const m = await Machine.boot({ heaps: { system: {}, reserved: { sizeBytes: 64 << 20 } } });
  out('1. booted: a broker thread plays the kernel; heaps /dev/dma_heap/system and /dev/dma_heap/reserved');
  const camera = await m.spawn(procs, { name: 'camera-app' });
  const viewer = await m.spawn(procs, { name: 'viewer' });
  out(`2. spawned camera-app (pid ${camera.pid}) and viewer (pid ${viewer.pid}), each a worker thread`);
  const [camSock, viewSock] = await m.socketpair(camera, viewer);
  out(`3. socketpair(AF_UNIX, SOCK_STREAM): camera holds fd ${camSock}, viewer holds fd ${viewSock}`);

  const frame = await camera.call<{ fd: number; link: string; fdinfo: string }>('allocFrame', 'system');
  out(`4. camera: DMA_HEAP_IOCTL_ALLOC 1 MiB from the system heap → fd ${frame.fd} (${frame.link}), mmap'd`);
  out(indent(frame.fdinfo));
  const bytes = await camera.call<number>('renderFrame', 1);
  out(`5. camera: DMA_BUF_IOCTL_SYNC START|WRITE, wrote ${bytes} bytes of test pattern, SYNC END|WRITE`);
  await bufinfo(m, '(count 2: the fd and the mapping)');

  const sent = await camera.call<{ sent: number; closedOwnFd: number }>('sendFrame', camSock);
  out(`\n6. camera: sendmsg("frame", SCM_RIGHTS [fd ${frame.fd}]) sent ${sent.sent} bytes, then closed fd ${sent.closedOwnFd}`);
  out('   the buffer lives on: one reference in flight in the socket, one held by the camera\'s mapping');
  await bufinfo(m, '(fd closed, message in flight)');

  const t0 = performance.now();
  const v = await viewer.call<{ fd: number; link: string; msg: string; bad: number; checked: number }>('receiveAndVerify', viewSock);
  const dt = performance.now() - t0;
  out(`\n7. viewer: recvmsg got "${v.msg}" and fd ${v.fd} (${v.link}); mmap'd the same pages, no copy`);
  check(v.bad === 0, `viewer verified ${v.checked} pixels under SYNC START|READ (${v.bad} wrong) in ${dt.toFixed(1)} ms`);
  const ack = await camera.call<string>('readAck');
  check(ack.startsWith('viewer pid'), `camera reads the viewer's write through its own mapping: "${ack}"`);
  out('\n  -- dmabuf_dump: both processes map the buffer, each is charged half (Pss) --');
  out(indent(await m.debugfs.read('dmabuf_dump')));

  await viewer.call('viewerDone');
  await camera.call('cameraDone');
  out('\n8. viewer and camera munmap and close: the last reference goes, the heap buffer is released');
  await bufinfo(m, '(after every fd closed and every mapping dropped)');
  return demo.finish(m);
}
