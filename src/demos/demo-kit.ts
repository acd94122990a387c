/** What the demos share: the line sink, headings, "ok"/"FAIL" check lines, indented debugfs text, and the clean-shutdown verdict. */
import { formatLeaks } from '../kernel/leaks.js';
import { formatUnexpectedLockdep, type Machine } from '../machine.js';

/** Where a demo prints, one line at a time. */
export type Out = (line: string) => void;

/** The default sink: standard output. */
export const toStdout: Out = (l) => process.stdout.write(l + '\n');

/** `text` without its leading and trailing blank lines, each line indented by four spaces (debugfs dumps inside a demo). */
export function indent(text: string): string {
  return text
    .replace(/^(?:[ \t]*\n)+/, '')
    .trimEnd()
    .split('\n')
    .map((l) => (l.trim() === '' ? '' : `    ${l}`))
    .join('\n');
}

/** A heading: a blank line, the title and a rule under it. */
export function heading(out: Out, title: string): void {
  out(`\n${title}\n${'─'.repeat(title.length)}`);
}

/** A debugfs file (or other kernel text) under a caption saying what to look for in it. */
export function showText(out: Out, caption: string, text: string): void {
  out(`\n  ${caption}`);
  out(indent(text));
}

/** A demo's checks: each prints an "ok" or "FAIL" line; `finish` adds the clean-shutdown check and the verdict. */
export class DemoChecks {
  private failures = 0;

  constructor(private readonly out: Out) {}

  /** Prints `what` as passed or failed. */
  readonly check = (ok: boolean, what: string): void => {
    this.out(`  ${ok ? 'ok  ' : 'FAIL'} ${what}`);
    if (!ok) this.failures++;
  };

  /**
   * Shuts `m` down (a leak, an oops or a lock report the demo did not label fails it), prints the verdict and
   * returns the exit status (0: passed).
   */
  async finish(m: Machine): Promise<number> {
    const report = await m.shutdown({ quiet: true });
    const locks = report.lockdep.length > 0 ? `, ${formatUnexpectedLockdep(report.lockdep)}` : '';
    this.check(report.leaks.length === 0 && report.oopses.length === 0 && report.lockdep.length === 0, `clean shutdown: ${formatLeaks(report.leaks).trim()}, ${report.oopses.length} oopses${locks}`);
    this.out(this.failures === 0 ? '\ndemo passed' : `\ndemo FAILED (${this.failures} checks)`);
    return this.failures === 0 ? 0 : 1;
  }
}
