#!/usr/bin/env node
/** The dmabuf-sim command line: `demo <name>` runs a demo, `bufinfo` prints debugfs state of a demo machine. */
import { flagship } from './demos/flagship.js';
import { implicitSync } from './demos/implicit-sync.js';
import { Machine } from './machine.js';

const demos: Record<string, () => Promise<number>> = {
  flagship: () => flagship(),
  'implicit-sync': () => implicitSync(),
};

const usage = `usage: dmabuf-sim <command>
  demo <name>       run a demo (${Object.keys(demos).join(', ')})
  bufinfo           boot a machine, allocate and share a few buffers, print bufinfo and dmabuf_dump
  help              this text`;

async function bufinfoCommand(): Promise<number> {
  const m = await Machine.boot({ heaps: { system: {}, reserved: { sizeBytes: 16 << 20 } } });
  const a = await m.spawn(new URL('./demos/flagship-procs.js', import.meta.url), { name: 'camera-app' });
  const b = await m.spawn(new URL('./demos/flagship-procs.js', import.meta.url), { name: 'viewer' });
  const [sa] = await m.socketpair(a, b);
  await a.call('allocFrame', 'system');
  await a.call('renderFrame', 1);
  await a.call('sendFrame', sa);
  process.stdout.write(await m.debugfs.read('dma_buf/bufinfo'));
  process.stdout.write('\n' + (await m.debugfs.read('dmabuf_dump')));
  await m.shutdown();
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, arg] = argv;
  switch (cmd) {
    case 'demo': {
      const d = demos[arg ?? 'flagship'];
      if (!d) {
        process.stderr.write(`unknown demo '${arg}'\n${usage}\n`);
        return 2;
      }
      return d();
    }
    case 'bufinfo':
      return bufinfoCommand();
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(usage + '\n');
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command '${cmd}'\n${usage}\n`);
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
