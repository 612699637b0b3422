/**
 * Per-unit round-trip estimates, the way TCP sets its retransmission timeout (RFC 6298): a smoothed
 * mean and mean deviation, updated from every answered request. `hedgeAfterMs` is mean + 4 deviations:
 * a healthy replica's reply comes before it almost always, so a request still unanswered then is
 * probably on a dead or stopped replica and is worth sending again.
 *
 * Estimates are kept per size class (rows the replica computes for the call, in powers of two): a
 * prefill step's 2048 rows take far longer than a decode step's 64, and hedging them on the decode
 * steps' estimate would send every large batch again (and compute it again) after ~100 ms.
 */

interface Estimate {
  srtt: number;
  rttvar: number;
}

export interface LatencyOptions {
  /** Never hedge sooner than this (noise on a loaded machine is not a fault); default 100 ms. */
  minHedgeMs?: number;
  /** Never wait longer than this before the first re-send; default 2000 ms. */
  maxHedgeMs?: number;
  /** Before any reply was seen; default 1000 ms. */
  initialHedgeMs?: number;
}

export class LatencyTracker {
  /** Per (unit, size class). */
  private readonly units = new Map<string, Estimate>();
  /** Per size class, over every unit: the estimate for units not heard from yet at that size. */
  private readonly all = new Map<number, Estimate>();
  private readonly min: number;
  private readonly max: number;
  private readonly initial: number;

  constructor(o: LatencyOptions = {}) {
    this.min = o.minHedgeMs ?? 100;
    this.max = Math.max(this.min, o.maxHedgeMs ?? 2000);
    this.initial = o.initialHedgeMs ?? 1000;
  }

  /** `rows`: what the replica computes for the call the request belongs to (default 1). */
  observe(unit: string, ms: number, rows = 1): void {
    const size = sizeClass(rows);
    const key = `${unit}|${size}`;
    this.units.set(key, update(this.units.get(key), ms));
    this.all.set(size, update(this.all.get(size), ms));
  }

  /** How long to wait for a reply before sending the request again. */
  hedgeAfterMs(unit: string, rows = 1): number {
    const size = sizeClass(rows);
    const e = this.units.get(`${unit}|${size}`) ?? this.all.get(size);
    const ms = e ? e.srtt + 4 * e.rttvar : this.initial;
    return Math.min(this.max, Math.max(this.min, ms));
  }
}

function update(e: Estimate | undefined, ms: number): Estimate {
  if (!e) return { srtt: ms, rttvar: ms / 2 };
  const rttvar = 0.75 * e.rttvar + 0.25 * Math.abs(e.srtt - ms);
  return { srtt: 0.875 * e.srtt + 0.125 * ms, rttvar };
}

/** 0 for 1 row, 1 for 2-3, 2 for 4-7, ... */
function sizeClass(rows: number): number {
  return 31 - Math.clz32(Math.max(1, rows));
}
