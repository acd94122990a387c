/** The demos behind `npm start` and `dmabuf-sim demo <name>` run to "demo passed" and check what they print. */
import test from 'ava';
import { flagship } from '../src/demos/flagship.js';
import { implicitSync } from '../src/demos/implicit-sync.js';

test('flagship: camera → viewer fd passing, zero copy, clean shutdown', async (t) => {
  const lines: string[] = [];
  t.is(await flagship((l) => lines.push(l)), 0, lines.join('\n'));
  const text = lines.join('\n');
  t.regex(text, /viewer: recvmsg got "frame" and fd \d+ \(\/dmabuf:camera-frame\)/);
  t.regex(text, /ok {3}camera reads the viewer's write through its own mapping/);
  t.regex(text, /camera-frame +1024 kB +512 kB +2 /, 'dmabuf_dump charges each of the two mappers half');
  t.notRegex(text, /FAIL/);
});

test('implicit-sync: SYNC START waits for another process\'s write fence', async (t) => {
  const lines: string[] = [];
  t.is(await implicitSync((l) => lines.push(l)), 0, lines.join('\n'));
  t.regex(lines.join('\n'), /\twrite fence:sw_sync gpu seq 1 unsignalled/);
});
