/** `dmabuf-sim bufinfo`: a machine where a camera shares a buffer with a viewer, as the kernel's debugfs shows it. */
import { Machine } from '../machine.js';
import { DemoChecks, heading, showText, toStdout, type Out } from './demo-kit.js';

const procs = new URL('./flagship-procs.js', import.meta.url);

/**
 * Boots a machine, has a camera process allocate, fill and send a frame to a viewer process that maps it, then
 * prints dma_buf/bufinfo and dmabuf_dump with what to read in each. Returns non-zero if a check failed.
 */
export async function bufinfoDemo(out: Out = toStdout): Promise<number> {
  const demo = new DemoChecks(out);
  out('dmabuf-sim bufinfo');
  out('A camera process shares one dma-buf with a viewer process; this is what the kernel\'s debugfs says about it.');

  heading(out, 'Who holds the buffer');
  const m = await Machine.boot({ heaps: { system: {} } });
  const camera = await m.spawn(procs, { name: 'camera-app' });
  const viewer = await m.spawn(procs, { name: 'viewer' });
  const [camSock, viewSock] = await m.socketpair(camera, viewer);
  const frame = await camera.call<{ fd: number; link: string }>('allocFrame', 'system');
  await camera.call('renderFrame', 1);
  await camera.call('sendFrame', camSock);
  out(`camera-app (pid ${camera.pid}): allocated "camera-frame", 1 MiB from /dev/dma_heap/system (fd ${frame.fd}),`);
  out(`  mapped and filled it, sent the fd to the viewer over a unix socket, then closed its own fd: it keeps its mapping.`);
  const v = await viewer.call<{ fd: number; bad: number }>('receiveAndVerify', viewSock);
  out(`viewer (pid ${viewer.pid}): received the buffer as fd ${v.fd} and mapped it (the same memory: no copy).`);
  demo.check(v.bad === 0, 'the viewer sees every pixel the camera wrote');

  showText(
    out,
    'dma_buf/bufinfo — one line per dma-buf: size, file flags and mode, count = references to its file (here 3:\n' +
      '  the camera\'s mapping, the viewer\'s fd and the viewer\'s mapping), exporter (heap), inode, name:',
    await m.debugfs.read('dma_buf/bufinfo'),
  );
  showText(
    out,
    'dmabuf_dump — per process: the buffers it holds, Rss and Pss (a shared buffer\'s size divided among the\n' +
      '  processes holding it); then the buffer × process table (fd and map references per process):',
    await m.dmabufDump(),
  );

  heading(out, 'Shutdown');
  await viewer.call('viewerDone');
  await camera.call('cameraDone');
  out('viewer and camera-app unmap and close; the last reference frees the buffer.');
  return demo.finish(m);
}
