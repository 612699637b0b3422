/** Per-unit load counters, published and reset every stats interval (so each message is a delta). */

export interface UnitLoad {
  /** Requests answered (one NATS message each). */
  requests: number;
  /** Token rows computed. */
  tokens: number;
  /** onnxruntime runs (fewer than requests when coalescing merged some). */
  runs: number;
  /** Wall time spent inside onnxruntime runs. */
  busyMs: number;
  /** Summed time requests waited between arrival and the start of their run. */
  queueWaitMs: number;
}

export interface StatsMessage {
  model: string;
  pool: string;
  replica: string;
  executionProvider: string;
  /** Milliseconds this message covers. */
  intervalMs: number;
  at: string;
  units: Record<string, UnitLoad>;
}

export class LoadCounters {
  private loads = new Map<string, UnitLoad>();
  private since = performance.now();

  constructor(units: readonly string[]) {
    for (const u of units) this.loads.set(u, emptyLoad());
  }

  record(unit: string, run: { requests: number; tokens: number; busyMs: number; queueWaitMs: number }): void {
    const l = this.loads.get(unit);
    if (!l) return;
    l.requests += run.requests;
    l.tokens += run.tokens;
    l.runs += 1;
    l.busyMs += run.busyMs;
    l.queueWaitMs += run.queueWaitMs;
  }

  /** The counters since the last call, then zeroed. */
  take(): { intervalMs: number; units: Record<string, UnitLoad> } {
    const now = performance.now();
    const units: Record<string, UnitLoad> = {};
    for (const [name, l] of this.loads) {
      units[name] = { ...l, busyMs: round(l.busyMs), queueWaitMs: round(l.queueWaitMs) };
      this.loads.set(name, emptyLoad());
    }
    const intervalMs = round(now - this.since);
    this.since = now;
    return { intervalMs, units };
  }
}

function emptyLoad(): UnitLoad {
  return { requests: 0, tokens: 0, runs: 0, busyMs: 0, queueWaitMs: 0 };
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
