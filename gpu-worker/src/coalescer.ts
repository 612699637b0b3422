/**
 * Coalesces concurrent requests for one unit into one onnxruntime run: rows are concatenated, run
 * once, and the output split back per request. Requests that arrive while a run is in progress wait
 * and go together in the next run, so coalescing adds no delay to an idle unit. The queue is bounded
 * (beyond it a request is refused as `overloaded` at once) and a request whose sender has given up by
 * the time its run starts is dropped as `expired`, not computed.
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

interface Pending {
  x: Float32Array;
  rows: number;
  arrivedAt: number;
  /** performance.now() time after which nobody waits for the result. */
  expiresAt: number;
  resolve: (r: UnitResult) => void;
  reject: (err: Error) => void;
}

export interface CoalescerOptions {
  unit: string;
  session: UnitSession;
  inputName: string;
  outputName: string;
  /** Input dims after the leading row axis: [H] for experts, [3,S,S] or [mel,frames] for encoders. */
  inRowDims: readonly number[];
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

export class UnitCoalescer {
  private queue: Pending[] = [];
  private queuedRows = 0;
  private pumping = false;
  private idleWaiters: Array<() => void> = [];

  private readonly clock: RunClock;

  /** Requests received and not yet answered (queued or in the running batch). */
  private outstanding = 0;

  constructor(private readonly o: CoalescerOptions) {
    this.clock = o.clock ?? new RunClock();
    o.counters.trackQueue(o.unit, () => this.outstanding);
  }

  /**
   * x is row-major [rows, ...inRowDims]; resolves to the unit's [rows, outRowSize] output, or rejects
   * with DroppedWork when the queue is full or `expiresAt` (a performance.now() time) passes first.
   */
  submit(x: Float32Array, rows: number, expiresAt = Infinity): Promise<UnitResult> {
    return new Promise((resolve, reject) => {
      const limit = this.o.maxQueuedRows ?? 8 * this.o.maxRowsPerRun;
      if (this.queuedRows > 0 && this.queuedRows + rows > limit) {
        reject(new DroppedWork('overloaded', `unit ${this.o.unit}: ${this.queuedRows} rows already queued (limit ${limit})`));
        return;
      }
      this.queuedRows += rows;
      this.outstanding++;
      this.queue.push({ x, rows, arrivedAt: performance.now(), expiresAt, resolve, reject });
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
        this.outstanding--;
        p.reject(new DroppedWork('expired', `unit ${this.o.unit}: the deadline passed ${Math.round(now - p.expiresAt)} ms before the run`));
      }
    }
    let rows = 0;
    let n = 0;
    while (n < this.queue.length && (n === 0 || rows + this.queue[n].rows <= this.o.maxRowsPerRun)) rows += this.queue[n++].rows;
    this.queuedRows -= rows;
    return this.queue.splice(0, n);
  }

  private async run(batch: Pending[]): Promise<void> {
    const { inRowDims, outRowSize } = this.o;
    const rows = batch.reduce((s, p) => s + p.rows, 0);
    const started = performance.now();
    let x: Float32Array;
    if (batch.length === 1) x = batch[0].x;
    else {
      x = new Float32Array(rows * inRowDims.reduce((a, b) => a * b, 1));
      let off = 0;
      for (const p of batch) {
        x.set(p.x, off);
        off += p.x.length;
      }
    }
    let busyMs = 0;
    try {
      const out = await this.o.session.run({ [this.o.inputName]: { data: x, dims: [rows, ...inRowDims] } });
      busyMs = this.clock.ended(started);
      const y = out[this.o.outputName];
      if (!y || y.data.length !== rows * outRowSize) {
        throw new Error(`unit ${this.o.unit} returned ${y ? `[${y.dims.join(',')}]` : 'no output'} for ${rows} rows, expected ${rows} x ${outRowSize} values`);
      }
      const computeUs = Math.round(busyMs * 1000);
      let off = 0;
      for (const p of batch) {
        p.resolve({ y: y.data.subarray(off, off + p.rows * outRowSize), computeUs });
        off += p.rows * outRowSize;
      }
    } catch (err) {
      busyMs ||= this.clock.ended(started);
      for (const p of batch) p.reject(err as Error);
    }
    const ended = performance.now();
    this.outstanding -= batch.length;
    this.o.counters.record(this.o.unit, {
      requests: batch.length,
      tokens: rows,
      busyMs,
      queueWaitMs: batch.reduce((s, p) => s + (started - p.arrivedAt), 0),
      latenciesMs: batch.map((p) => ended - p.arrivedAt),
    });
  }
}
