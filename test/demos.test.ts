/** The demos behind `npm start`, `dmabuf-sim demo <name>` and `dmabuf-sim bufinfo` pass and print what a reader needs. */
import test from 'ava';
import { bufinfoDemo } from '../src/demos/bufinfo.js';
import { flagship } from '../src/demos/flagship.js';
import { implicitSync } from '../src/demos/implicit-sync.js';
import { lockInversion } from '../src/demos/lock-inversion.js';

test('flagship: camera → viewer fd passing, zero copy, clean shutdown', async (t) => {
  const lines: string[] = [];
  t.is(await flagship((l) => lines.push(l)), 0, lines.join('\n'));
  const text = lines.join('\n');
  t.regex(text, /viewer: recvmsg got "frame" and fd \d+ \(\/dmabuf:camera-frame\)/);
  t.regex(text, /ok {3}camera reads the viewer's write through its own mapping/);
  t.regex(text, /camera-frame +1024 kB +512 kB +2 /, 'dmabuf_dump charges each of the two mappers half');
  t.notRegex(text, /FAIL/);
});

/** The text between two headings (or to the end). */
function section(text: string, from: string, to?: string): string {
  const a = text.indexOf(from);
  const b = to === undefined ? text.length : text.indexOf(to, a);
  return a < 0 || b < 0 ? '' : text.slice(a, b);
}

test('implicit-sync explains each step and shows the fence in sync/info, bufinfo and the sync_file', async (t) => {
  const lines: string[] = [];
  t.is(await implicitSync((l) => lines.push(l)), 0, lines.join('\n'));
  const text = lines.join('\n');
  for (let i = 1; i <= 6; i++) t.regex(text, new RegExp(`^Step ${i}\\. .+\\n─+$`, 'm'), `step ${i} has a heading`);
  const before = section(text, 'Step 2.', 'Step 3.');
  t.regex(before, /write fence:sw_sync gpu seq 1 unsignalled/, 'bufinfo: the pending write fence under the buffer');
  t.regex(before, /^ {4}gpu: 0\n {6}fence active: 1 \/ 0$/m, 'sync/info: the timeline at 0 and its pending point 1');
  const after = section(text, 'Step 5.', 'Step 6.');
  t.regex(after, /^ {4}gpu: 1\n\n {4}fences:$/m, 'sync/info after the signal: timeline at 1, the signaled point unlinked');
  t.regex(after, /unlinks a point from its timeline when it signals/, 'and the output says why the point is gone');
  t.regex(after, /write fence:sw_sync gpu seq 1 signalled/, 'bufinfo: the same fence, now signalled');
  t.regex(after, /ok {3}SYNC_IOC_FILE_INFO on the display's sync_file sw_sync-gpu\d+-1: status 1 \(signaled at \d+\.\d{9} s/);
  t.regex(text, /SYNC START returned [\d.]+ ms after it was made: only once the fence signaled/);
});

test('bufinfo shows the sender and the receiving viewer, with headings saying what to read', async (t) => {
  const lines: string[] = [];
  t.is(await bufinfoDemo((l) => lines.push(l)), 0, lines.join('\n'));
  const text = lines.join('\n');
  t.regex(text, /^Who holds the buffer\n─+$/m);
  t.regex(text, /^viewer \(pid 2\): received the buffer as fd \d+ and mapped it/m);
  t.regex(text, /^ {2}dma_buf\/bufinfo — .*\n.*\n {4}Dma-buf Objects:/m, 'bufinfo under a caption');
  t.regex(text, /01048576\t\d+\t\d+\t00000003\tsystem\t\d+\tcamera-frame/, 'count 3: camera mapping, viewer fd and mapping');
  t.regex(text, /^ {2}dmabuf_dump — /m);
  t.regex(text, /camera-app:1[\s\S]*camera-frame +1024 kB +512 kB +2 /, 'the sender, charged half');
  t.regex(text, /viewer:2[\s\S]*camera-frame +1024 kB +512 kB +2 /, 'the receiver, charged half');
  t.regex(text, /camera-app:1 +\| +viewer:2 +\|/, 'both processes in the buffer × process table');
  t.regex(text, /ok {3}clean shutdown/);
});

test('lock-inversion: two driver workers in opposite lock orders — predicted without a deadlock', async (t) => {
  const lines: string[] = [];
  t.is(await lockInversion((l) => lines.push(l)), 0, lines.join('\n'));
  const text = lines.join('\n');
  t.regex(text, /^Step 4\. What lockdep saw: the deadlock, predicted\n─+$/m);
  t.regex(text, /ok {3}lockdep reported the device lock \/ reservation lock inversion, though nothing blocked/);
  t.regex(text, /WARNING: possible circular locking dependency detected\n\s+-+\n\s+worker \d+ \(driver dev1\) is trying to acquire lock:\n\s+\(lockinv_device_lock\)/);
  t.regex(text, /first recorded by worker \d+ \(driver dev2\):/);
  t.regex(text, /ok {3}no real deadlock happened/);
  t.notRegex(text, /FAIL/);
});

test('lock-inversion --deadlock: the forced timing deadlocks; the watchdog names the cycle, breaks it, the demo exits cleanly', async (t) => {
  const lines: string[] = [];
  t.is(await lockInversion((l) => lines.push(l), { forceDeadlock: true }), 0, lines.join('\n'));
  const text = lines.join('\n');
  t.regex(text, /published wait: worker \d+ \(driver dev1\) waits for fence lockinv:dev2 \d+:1, signalled by worker \d+ \(driver dev2\)/);
  t.regex(text, /WARNING: deadlock detected \(wait-for cycle\)/);
  t.regex(text, /worker \d+ \(driver dev2\) is blocked on:\n\s+\(reservation_ww_class_mutex\)\{\+\.\+\.\}, ww_mutex #\d+, held by worker \d+ \(driver dev1\)/);
  t.regex(text, /worker \d+ \(driver dev1\) is blocked on:\n\s+\(dma_fence lockinv:dev2 context \d+ seqno 1\), signalled by worker \d+ \(driver dev2\)/);
  t.regex(text, /ok {3}dev2's dma_resv_lock\(B\) failed with -EDEADLK/);
  t.regex(text, /ok {3}dev1's eviction then finished/);
  t.regex(text, /ok {3}clean shutdown/);
  t.notRegex(text, /FAIL/);
});
