#!/usr/bin/env node
/** The dmabuf-sim command line: `demo <name>` runs a demo, `bufinfo` prints debugfs state of a demo machine. */
import { bufinfoDemo } from './demos/bufinfo.js';
import { flagship } from './demos/flagship.js';
import { implicitSync } from './demos/implicit-sync.js';
import { lockInversion } from './demos/lock-inversion.js';

const demos: Record<string, (flags: readonly string[]) => Promise<number>> = {
  flagship: () => flagship(),
  'implicit-sync': () => implicitSync(),
  'lock-inversion': (flags) => lockInversion(undefined, { forceDeadlock: flags.includes('--deadlock') }),
};

const usage = `usage: dmabuf-sim <command>
  demo <name>       run a demo (${Object.keys(demos).join(', ')})
  demo lock-inversion --deadlock
                    the same two drivers with the timing forced: a real deadlock, caught by the watchdog
  bufinfo           a camera shares a buffer with a viewer: bufinfo and dmabuf_dump, explained
  help              this text`;

async function main(argv: string[]): Promise<number> {
  const [cmd, arg, ...flags] = argv;
  switch (cmd) {
    case 'demo': {
      const d = demos[arg ?? 'flagship'];
      if (!d) {
        process.stderr.write(`unknown demo '${arg}'\n${usage}\n`);
        return 2;
      }
      const unknown = flags.filter((f) => !(arg === 'lock-inversion' && f === '--deadlock'));
      if (unknown.length > 0) {
        process.stderr.write(`unknown option '${unknown[0]}' for demo '${arg}'\n${usage}\n`);
        return 2;
      }
      return d(flags);
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
