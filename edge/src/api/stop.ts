/**
 * Stop strings over streamed text: text that might be the start of a stop string is held back until the
 * next piece shows whether it is one, so a stop string never leaks to the client, even split across tokens.
 */
export class StopMatcher {
  private held = '';
  private done = false;

  constructor(private readonly stops: readonly string[]) {}

  /** Feeds decoded text; returns what may be shown now and whether a stop string was reached. */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.done) return { emit: '', stopped: true };
    const buf = this.held + text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = buf.indexOf(stop);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.done = true;
      this.held = '';
      return { emit: buf.slice(0, cut), stopped: true };
    }
    const keep = this.longestPendingPrefix(buf);
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** At the end of generation: whatever was held back, since no stop string completed it. */
  flush(): string {
    const rest = this.done ? '' : this.held;
    this.held = '';
    return rest;
  }

  /** Length of the longest suffix of buf that is a proper prefix of some stop string. */
  private longestPendingPrefix(buf: string): number {
    let best = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, buf.length); n > best; n--) {
        if (buf.endsWith(stop.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
