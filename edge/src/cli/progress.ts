/**
 * A one-line progress bar on stderr for long transfers: bytes done of total, rate and ETA. On a terminal
 * it redraws in place; otherwise (logs, `docker compose logs`) it prints a line at most every 5 s.
 */
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number): string {
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${UNITS[i]}`;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const t = Math.round(s);
  return t >= 3600 ? `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m` : t >= 60 ? `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s` : `${t}s`;
}

export class ProgressBar {
  private done = 0;
  private readonly started = performance.now();
  private lastDraw = 0;
  private readonly tty: boolean;

  constructor(
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = out.isTTY === true;
  }

  add(bytes: number): void {
    this.done += bytes;
    const now = performance.now();
    if (now - this.lastDraw >= (this.tty ? 100 : 5000) || this.done >= this.total) {
      this.lastDraw = now;
      this.draw();
    }
  }

  /** The line as drawn: `[####......]  40%  4.0 MiB / 10.0 MiB  2.0 MiB/s  ETA 3s`. */
  line(): string {
    const fraction = this.total ? Math.min(1, this.done / this.total) : 1;
    const seconds = (performance.now() - this.started) / 1000;
    const rate = seconds > 0 ? this.done / seconds : 0;
    const eta = rate > 0 ? (this.total - this.done) / rate : Infinity;
    const width = 24;
    const bar = '#'.repeat(Math.round(fraction * width)).padEnd(width, '.');
    return `[${bar}] ${String(Math.floor(fraction * 100)).padStart(3)}%  ${formatBytes(this.done)} / ${formatBytes(this.total)}  ${formatBytes(rate)}/s  ETA ${formatSeconds(eta)}`;
  }

  private draw(): void {
    this.out.write(this.tty ? `\r${this.line()}\x1b[K` : `${this.line()}\n`);
  }

  /** Ends the line (on a terminal) so later output starts on its own line. */
  finish(): void {
    if (this.tty) this.out.write('\n');
  }
}
