#!/usr/bin/env node
/** The dmabuf-sim command line: `demo <name>` runs a demo, `bufinfo` prints debugfs state of a demo machine. */
import { bufinfoDemo } from './demos/bufinfo.js';
import { flagship } from './demos/flagship.js';
import { implicitSync } from './demos/implicit-sync.js';

const demos: Record<string, () => Promise<number>> = {
  flagship: () => flagship(),
  'implicit-sync': () => implicitSync(),
};

const usage = `usage: dmabuf-sim <command>
  demo <name>       run a demo (${Object.keys(demos).join(', ')})
  bufinfo           a camera shares a buffer with a viewer: bufinfo and dmabuf_dump, explained
  help              this text`;

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
      return bufinfoDemo();
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

// `dmabuf-sim ... | head`: a closed pipe ends the output quietly instead of with an unhandled EPIPE.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
  process.exit(0);
});

process.exitCode = await main(process.argv.slice(2));
