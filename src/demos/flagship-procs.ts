/** The two processes of the flagship demo: a camera app that fills a frame and a viewer that checks it, zero copy. */
import * as sys from '../user/index.js';

export const WIDTH = 512;
export const HEIGHT = 512;
export const FRAME_BYTES = WIDTH * HEIGHT * 4;

/** The test pattern: pixel (x, y) = (x, y, x ^ y, frame) in RGBA. */
export function pixel(x: number, y: number, frame: number): number {
  return ((x & 0xff) | ((y & 0xff) << 8) | (((x ^ y) & 0xff) << 16) | ((frame & 0xff) << 24)) >>> 0;
}

let frameFd = -1;
let frameMap: sys.Mapping | null = null;

/** camera: allocates a frame from the heap, names it and maps it. Returns what a person would want to see. */
export function allocFrame(heap: string): { fd: number; link: string; fdinfo: string } {
  const heapFd = sys.heapOpen(heap);
  frameFd = sys.heapAlloc(heapFd, FRAME_BYTES);
  sys.close(heapFd);
  sys.dmaBufSetName(frameFd, 'camera-frame');
  frameMap = sys.mmap(null, FRAME_BYTES, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, frameFd, 0);
  return { fd: frameFd, link: sys.readlink(`/proc/self/fd/${frameFd}`), fdinfo: sys.readFile(`/proc/self/fdinfo/${frameFd}`) };
}

/** camera: writes the pattern for frame `n` under DMA_BUF_IOCTL_SYNC START/END (CPU write access). */
export function renderFrame(n: number): number {
  const px = frameMap!.view(Uint32Array);
  sys.dmaBufSync(frameFd, sys.DMA_BUF_SYNC_START | sys.DMA_BUF_SYNC_WRITE);
  for (let y = 0; y < HEIGHT; y++) for (let x = 0; x < WIDTH; x++) px[y * WIDTH + x] = pixel(x, y, n);
  sys.dmaBufSync(frameFd, sys.DMA_BUF_SYNC_END | sys.DMA_BUF_SYNC_WRITE);
  return FRAME_BYTES;
}

/** camera: passes the frame's fd to the viewer over the socket (SCM_RIGHTS), then closes its own fd. */
export function sendFrame(sock: number): { sent: number; closedOwnFd: number } {
  const sent = sys.sendmsg(sock, { data: 'frame', fds: [frameFd] });
  const closed = frameFd;
  sys.close(frameFd);
  frameFd = -1;
  return { sent, closedOwnFd: closed };
}

/** camera: reads the viewer's acknowledgement through its own (still live) mapping. */
export function readAck(): string {
  const bytes = frameMap!.bytes;
  const end = bytes.indexOf(0, FRAME_BYTES - 64);
  return Buffer.from(bytes.subarray(FRAME_BYTES - 64, end < 0 ? FRAME_BYTES : end)).toString('latin1');
}

export function cameraDone(): void {
  sys.munmap(frameMap!);
  frameMap = null;
}

let viewerFd = -1;
let viewerMap: sys.Mapping | null = null;

/** viewer: drops its mapping and its fd. */
export function viewerDone(): void {
  sys.munmap(viewerMap!);
  sys.close(viewerFd);
  viewerMap = null;
  viewerFd = -1;
}

/** viewer: receives the fd, maps it, verifies every pixel under SYNC READ, writes an ack into the last 64 bytes. */
export function receiveAndVerify(sock: number): { fd: number; link: string; msg: string; bad: number; checked: number } {
  const m = sys.recvmsg(sock, 64, 4);
  const fd = m.fds[0]!;
  const link = sys.readlink(`/proc/self/fd/${fd}`);
  const map = sys.mmap(null, FRAME_BYTES, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
  const px = map.view(Uint32Array);
  sys.dmaBufSync(fd, sys.DMA_BUF_SYNC_START | sys.DMA_BUF_SYNC_READ);
  let bad = 0;
  for (let y = 0; y < HEIGHT; y++) for (let x = 0; x < WIDTH; x++) if (px[y * WIDTH + x] !== pixel(x, y, 1)) bad++;
  sys.dmaBufSync(fd, sys.DMA_BUF_SYNC_END | sys.DMA_BUF_SYNC_READ);
  sys.dmaBufSync(fd, sys.DMA_BUF_SYNC_START | sys.DMA_BUF_SYNC_WRITE);
  const ack = Buffer.from(`viewer pid ${sys.getpid()} saw ${WIDTH}x${HEIGHT} ok`, 'latin1');
  map.bytes.set(ack, FRAME_BYTES - 64);
  map.bytes[FRAME_BYTES - 64 + ack.length] = 0;
  sys.dmaBufSync(fd, sys.DMA_BUF_SYNC_END | sys.DMA_BUF_SYNC_WRITE);
  viewerFd = fd;
  viewerMap = map;
  return { fd, link, msg: Buffer.from(m.data).toString(), bad, checked: WIDTH * HEIGHT };
}
