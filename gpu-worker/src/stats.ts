/**
 * Per-unit load, two ways: delta counters published and reset every stats interval (LoadCounters.take),
 * and a sliding window (requests, tokens, busy time, queue depth, latency percentiles) that the NATS
 * services protocol serves on `$SRV.STATS` (see service.ts), which the autoscaler reads.
 */

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

/** One run as the coalescer reports it. */
export interface RunRecord {
  requests: number;
  tokens: number;
  busyMs: number;
  queueWaitMs: number;
  /** Per request: arrival to output ready. */
  latenciesMs?: number[];
}

/** One unit's load over the last `windowMs` (what `$SRV.STATS` carries per unit). */
export interface UnitWindowStats {
  windowMs: number;
  requests: number;
  tokens: number;
  busyMs: number;
  /** busyMs / windowMs: the fraction of the window this unit's runs kept the replica busy. */
  busyFraction: number;
  requestsPerSecond: number;
  tokensPerSecond: number;
  /** Requests received and not yet answered, now. */
  queueDepth: number;
  latencyMs: { p50: number; p90: number; p99: number };
}

/** The window's default length: long enough for stable percentiles, short enough to follow a load step. */
export const DEFAULT_STATS_WINDOW_MS = 10_000;

interface WindowEvent extends RunRecord {
  at: number;
}

export class LoadCounters {
  private loads = new Map<string, UnitLoad>();
  private since = performance.now();
  private windows = new Map<string, WindowEvent[]>();
  private depth = new Map<string, () => number>();

  constructor(
    units: readonly string[],
    private readonly windowMs = DEFAULT_STATS_WINDOW_MS,
    private readonly now: () => number = () => performance.now(),
  ) {
    for (const u of units) {
      this.loads.set(u, emptyLoad());
      this.windows.set(u, []);
    }
    this.since = this.now();
  }

  /** Where a unit's current queue depth comes from (its coalescer). */
  trackQueue(unit: string, depth: () => number): void {
    this.depth.set(unit, depth);
  }

  record(unit: string, run: RunRecord): void {
    const l = this.loads.get(unit);
    if (!l) return;
    l.requests += run.requests;
    l.tokens += run.tokens;
    l.runs += 1;
    l.busyMs += run.busyMs;
    l.queueWaitMs += run.queueWaitMs;
    this.windows.get(unit)!.push({ ...run, at: this.now() });
  }

  /** The counters since the last call, then zeroed. */
  take(): { intervalMs: number; units: Record<string, UnitLoad> } {
    const now = this.now();
    const units: Record<string, UnitLoad> = {};
    for (const [name, l] of this.loads) {
      units[name] = { ...l, busyMs: round(l.busyMs), queueWaitMs: round(l.queueWaitMs) };
      this.loads.set(name, emptyLoad());
    }
    const intervalMs = round(now - this.since);
    this.since = now;
    return { intervalMs, units };
  }

  /** Every unit's load over the last window (older runs are dropped here). */
  window(): Record<string, UnitWindowStats> {
    const now = this.now();
    const out: Record<string, UnitWindowStats> = {};
    for (const [unit, events] of this.windows) {
      while (events.length > 0 && events[0]!.at < now - this.windowMs) events.shift();
      let requests = 0;
      let tokens = 0;
      let busyMs = 0;
      const latencies: number[] = [];
      for (const e of events) {
        requests += e.requests;
        tokens += e.tokens;
        busyMs += e.busyMs;
        if (e.latenciesMs) latencies.push(...e.latenciesMs);
      }
      latencies.sort((a, b) => a - b);
      const seconds = this.windowMs / 1000;
      out[unit] = {
        windowMs: this.windowMs,
        requests,
        tokens,
        busyMs: round(busyMs),
        busyFraction: round(Math.min(1, busyMs / this.windowMs)),
        requestsPerSecond: round(requests / seconds),
        tokensPerSecond: round(tokens / seconds),
        queueDepth: this.depth.get(unit)?.() ?? 0,
        latencyMs: { p50: round(percentile(latencies, 0.5)), p90: round(percentile(latencies, 0.9)), p99: round(percentile(latencies, 0.99)) },
      };
    }
    return out;
  }
}

/** Nearest-rank percentile of sorted values (0 when there are none). */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function emptyLoad(): UnitLoad {
  return { requests: 0, tokens: 0, runs: 0, busyMs: 0, queueWaitMs: 0 };
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
