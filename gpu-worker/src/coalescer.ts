/**
 * Coalesces concurrent requests into one onnxruntime run. A request carries rows for one or more units
 * (an expert request: one unit; a layer-group request: several experts of one layer); the rows of every
 * unit are concatenated across the waiting requests, run once, and the output split back per request.
 * Requests that arrive while a run is in progress wait and go together in the next run, so coalescing
 * adds no delay to an idle unit. The queue is bounded (beyond it a request is refused as `overloaded`
 * at once) and a request whose sender has given up by the time its run starts is dropped as `expired`,
 * not computed.
 */
import type { UnitSession } from '@unimoe/shared/runtime/ort-unit';
import type { LoadCounters } from './stats';

/** A request's rows of the output, and how long the run that computed them took. */
export interface UnitResult {
  y: Float32Array;
  computeUs: number;
}

/** Work refused or dropped without running: the sender may try another replica. */
export class DroppedWork extends Error {
  constructor(
    readonly code: 'overloaded' | 'expired',
    message: string,
  ) {
    super(message);
    this.name = 'DroppedWork';
  }
}

/** One unit's rows of a request: x is row-major [rows, ...inRowDims]. */
export interface UnitRows {
  unit: string;
  x: Float32Array;
  rows: number;
}

/** Runs each unit's rows (one entry per unit, distinct units) in one go; result i is parts[i]'s output. */
export type ExecuteRun = (parts: UnitRows[]) => Promise<Float32Array[]>;

/** A request's outputs, one per part in request order, and how long the run that computed them took. */
export interface PartsResult {
  ys: Float32Array[];
  computeUs: number;
}

interface Pending {
  parts: UnitRows[];
  rows: number;
  arrivedAt: number;
  /** performance.now() time after which nobody waits for the result. */
  expiresAt: number;
  resolve: (r: PartsResult) => void;
  reject: (err: Error) => void;
}

export interface CoalescerOptions {
  /** What the queue serves, for messages (a unit name, or a layer group's name). */
  label: string;
  /** The units a request may carry rows for (stats are kept per unit). */
  units: readonly string[];
  execute: ExecuteRun;
  /** Input values per row: H for experts, 3*S*S or mel*frames for encoders. */
  inRowSize: number;
  /** Output values per row: H for experts, tokens * H for encoders. */
  outRowSize: number;
  /** Upper bound on rows per run, to bound memory; a single larger request still runs alone. */
  maxRowsPerRun: number;
  /** Most rows waiting for a run (default 8 x maxRowsPerRun); a request beyond it is refused as overloaded. */
  maxQueuedRows?: number;
  counters: LoadCounters;
  /** Shared by every coalescer of one process (see RunClock). */
  clock?: RunClock;
}

/**
 * onnxruntime-node runs a session synchronously on the main thread (inside a setImmediate), so runs of
 * different units queued in the same turn execute one after another: a run's own compute time starts
 * when it started or when the process's previous run ended, whichever is later.
 */
export class RunClock {
  private lastEnd = 0;

  /** Milliseconds of compute for a run started at `started` that just ended. */
  ended(started: number): number {
    const now = performance.now();
    const ms = now - Math.max(started, this.lastEnd);
    this.lastEnd = now;
    return ms;
  }
}

export class Coalescer {
  private queue: Pending[] = [];
  private queuedRows = 0;
  private pumping = false;
  private idleWaiters: Array<() => void> = [];

  private readonly clock: RunClock;

  /** Per unit: requests received with rows for it and not yet answered (queued or in the running batch). */
  private readonly outstanding = new Map<string, number>();

  constructor(private readonly o: CoalescerOptions) {
    this.clock = o.clock ?? new RunClock();
    for (const unit of o.units) {
      this.outstanding.set(unit, 0);
      o.counters.trackQueue(unit, () => this.outstanding.get(unit)!);
    }
  }

  /** One unit's rows (the unit must be the coalescer's only one, or is named by `unit`). */
  async submit(x: Float32Array, rows: number, expiresAt = Infinity, unit = this.o.units[0]!): Promise<UnitResult> {
    const { ys, computeUs } = await this.submitParts([{ unit, x, rows }], expiresAt);
    return { y: ys[0]!, computeUs };
  }

  /**
   * Resolves to each part's [rows, outRowSize] output, or rejects with DroppedWork when the queue is
   * full or `expiresAt` (a performance.now() time) passes first. A unit may appear once per request.
   */
  submitParts(parts: UnitRows[], expiresAt = Infinity): Promise<PartsResult> {
    return new Promise((resolve, reject) => {
      const units = new Set(parts.map((p) => p.unit));
      const unknown = parts.find((p) => !this.outstanding.has(p.unit));
      if (unknown || units.size !== parts.length) {
        reject(new Error(`${this.o.label}: ${unknown ? `unit ${unknown.unit} is not served here` : 'a unit is given twice in one request'}`));
        return;
      }
      const rows = parts.reduce((s, p) => s + p.rows, 0);
      const limit = this.o.maxQueuedRows ?? 8 * this.o.maxRowsPerRun;
      if (this.queuedRows > 0 && this.queuedRows + rows > limit) {
        reject(new DroppedWork('overloaded', `${this.o.label}: ${this.queuedRows} rows already queued (limit ${limit})`));
        return;
      }
      this.queuedRows += rows;
      this.count(parts, +1);
      this.queue.push({ parts, rows, arrivedAt: performance.now(), expiresAt, resolve, reject });
      if (!this.pumping) {
        this.pumping = true;
        // Deferred one turn so that messages delivered in the same socket read join this first run.
        setImmediate(() => void this.pump());
      }
    });
  }

  /** Resolves once nothing is queued or running. */
  idle(): Promise<void> {
    if (!this.pumping) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private count(parts: UnitRows[], delta: number): void {
    for (const p of parts) this.outstanding.set(p.unit, this.outstanding.get(p.unit)! + delta);
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.takeBatch();
      if (batch.length > 0) await this.run(batch);
    }
    this.pumping = false;
    for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private takeBatch(): Pending[] {
    const now = performance.now();
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const p = this.queue[i];
      if (p.expiresAt <= now) {
        this.queue.splice(i, 1);
        this.queuedRows -= p.rows;
        this.count(p.parts, -1);
        p.reject(new DroppedWork('expired', `${this.o.label}: the deadline passed ${Math.round(now - p.expiresAt)} ms before the run`));
      }
    }
    let rows = 0;
    let n = 0;
    while (n < this.queue.length && (n === 0 || rows + this.queue[n].rows <= this.o.maxRowsPerRun)) rows += this.queue[n++].rows;
    this.queuedRows -= rows;
    return this.queue.splice(0, n);
  }

  private async run(batch: Pending[]): Promise<void> {
    const { inRowSize, outRowSize } = this.o;
    const started = performance.now();
    // Per unit, its parts across the batch in arrival order, concatenated.
    const perUnit = new Map<string, UnitRows[]>();
    for (const p of batch) for (const part of p.parts) perUnit.set(part.unit, [...(perUnit.get(part.unit) ?? []), part]);
    const inputs: UnitRows[] = [...perUnit].map(([unit, parts]) => {
      const rows = parts.reduce((s, p) => s + p.rows, 0);
      if (parts.length === 1) return { unit, x: parts[0]!.x, rows };
      const x = new Float32Array(rows * inRowSize);
      let off = 0;
      for (const p of parts) {
        x.set(p.x, off);
        off += p.x.length;
      }
      return { unit, x, rows };
    });
    let busyMs = 0;
    try {
      const ys = await this.o.execute(inputs);
      busyMs = this.clock.ended(started);
      const offsets = new Map<string, { y: Float32Array; at: number }>();
      for (const [i, input] of inputs.entries()) {
        const y = ys[i];
        if (!y || y.length !== input.rows * outRowSize) {
          throw new Error(`unit ${input.unit} returned ${y ? y.length : 'no'} values for ${input.rows} rows, expected ${input.rows} x ${outRowSize}`);
        }
        offsets.set(input.unit, { y, at: 0 });
      }
      const computeUs = Math.round(busyMs * 1000);
      for (const p of batch) {
        const ys = p.parts.map((part) => {
          const o = offsets.get(part.unit)!;
          o.at += part.rows * outRowSize;
          return o.y.subarray(o.at - part.rows * outRowSize, o.at);
        });
        p.resolve({ ys, computeUs });
      }
    } catch (err) {
      busyMs ||= this.clock.ended(started);
      for (const p of batch) p.reject(err as Error);
    }
    const ended = performance.now();
    const totalRows = inputs.reduce((s, i) => s + i.rows, 0);
    for (const p of batch) this.count(p.parts, -1);
    // Per unit: its requests, rows, and its rows' share of the run's time.
    for (const [unit, parts] of perUnit) {
      const mine = batch.filter((p) => p.parts.some((part) => part.unit === unit));
      const rows = parts.reduce((s, p) => s + p.rows, 0);
      this.o.counters.record(unit, {
        requests: mine.length,
        tokens: rows,
        busyMs: totalRows > 0 ? (busyMs * rows) / totalRows : 0,
        queueWaitMs: mine.reduce((s, p) => s + (started - p.arrivedAt), 0),
        latenciesMs: mine.map((p) => ended - p.arrivedAt),
      });
    }
  }
}

/** A single unit's session behind a coalescer (modality encoders). */
export function sessionRun(session: UnitSession, inputName: string, outputName: string, inRowDims: readonly number[]): ExecuteRun {
  return async ([part]) => {
    const out = await session.run({ [inputName]: { data: part!.x, dims: [part!.rows, ...inRowDims] } });
    const y = out[outputName];
    if (!y) throw new Error(`the session has no output ${outputName}`);
    return [y.data];
  };
}
