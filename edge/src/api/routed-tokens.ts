/**
 * Tokens the router sent to each (layer, expert), per modality of the token (text, image, audio,
 * video): running totals, a recent rate (the dashboard's heatmap) and deltas since the last take
 * (what the edge publishes for the autoscaler, see dispatch/pool-telemetry.ts).
 */

export type RoutedGrid = number[][];

/** How often a snapshot of the totals is kept for the recent rate. */
const SNAPSHOT_EVERY_MS = 1000;
const SNAPSHOTS_KEPT = 120;

export class RoutedTokens {
  private totals = new Map<string, RoutedGrid>();
  private taken = new Map<string, RoutedGrid>();
  private snapshots: { at: number; totals: Map<string, RoutedGrid> }[] = [];
  private lastSnapshot = -Infinity;

  constructor(
    readonly layers: number,
    readonly experts: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  add(layer: number, expert: number, modalities: Record<string, number>): void {
    this.snapshotIfDue();
    for (const [modality, n] of Object.entries(modalities)) {
      if (n > 0) this.grid(this.totals, modality)[layer]![expert]! += n;
    }
  }

  /** Totals since start, per modality. */
  total(): Record<string, RoutedGrid> {
    return Object.fromEntries([...this.totals].map(([m, g]) => [m, g.map((row) => [...row])]));
  }

  /** Counts since the previous call, per modality (modalities without new tokens left out). */
  takeDelta(): Record<string, RoutedGrid> {
    const out: Record<string, RoutedGrid> = {};
    for (const [m, g] of this.totals) {
      const before = this.grid(this.taken, m);
      const delta = g.map((row, l) => row.map((v, e) => v - before[l]![e]!));
      if (delta.some((row) => row.some((v) => v > 0))) out[m] = delta;
      this.taken.set(m, g.map((row) => [...row]));
    }
    return out;
  }

  /** Tokens per second over about the last `windowMs`, per modality. */
  rate(windowMs: number): Record<string, RoutedGrid> {
    this.snapshotIfDue();
    const now = this.now();
    const base = this.snapshots.find((s) => s.at >= now - windowMs);
    const seconds = Math.max(1e-3, (now - (base?.at ?? now)) / 1000);
    const out: Record<string, RoutedGrid> = {};
    for (const [m, g] of this.totals) {
      const before = base?.totals.get(m);
      out[m] = g.map((row, l) => row.map((v, e) => (base ? (v - (before?.[l]?.[e] ?? 0)) / seconds : 0)));
    }
    return out;
  }

  private snapshotIfDue(): void {
    const now = this.now();
    if (now - this.lastSnapshot < SNAPSHOT_EVERY_MS) return;
    this.lastSnapshot = now;
    this.snapshots.push({ at: now, totals: new Map([...this.totals].map(([m, g]) => [m, g.map((row) => [...row])])) });
    if (this.snapshots.length > SNAPSHOTS_KEPT) this.snapshots.shift();
  }

  private grid(map: Map<string, RoutedGrid>, modality: string): RoutedGrid {
    let g = map.get(modality);
    if (!g) map.set(modality, (g = Array.from({ length: this.layers }, () => new Array<number>(this.experts).fill(0))));
    return g;
  }
}

/** All modalities summed. */
export function sumGrids(grids: Record<string, RoutedGrid>, layers: number, experts: number): RoutedGrid {
  const out = Array.from({ length: layers }, () => new Array<number>(experts).fill(0));
  for (const g of Object.values(grids)) for (let l = 0; l < layers; l++) for (let e = 0; e < experts; e++) out[l]![e]! += g[l]?.[e] ?? 0;
  return out;
}
