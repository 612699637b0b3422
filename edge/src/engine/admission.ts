/**
 * Admission control for the engine: a bounded wait queue and a KV-cache memory budget. Each sequence
 * reserves the most KV-cache bytes it can ever need (prompt + max tokens, every layer, keys and values)
 * when it is submitted and frees them when it leaves, so admitted work can never outgrow the budget;
 * work beyond either bound is refused at once (the API answers 503 with Retry-After) instead of
 * queueing without end.
 */

/** Refused because the server is full or stopping; safe to retry later, possibly on another edge. */
export class EngineUnavailableError extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
    this.name = 'EngineUnavailableError';
  }
}

export interface AdmissionOptions {
  /** Most sequences waiting while every batch slot is taken (0: no queue beyond the batch). */
  maxWaiting: number;
  /** Most bytes the KV caches of all admitted (running and waiting) sequences may ever reach. */
  kvBudgetBytes: number;
}

/** Seconds a refused client is asked to wait: a few steps usually free a slot or some memory. */
const RETRY_AFTER_SECONDS = 1;

export class Admission {
  private reservedBytes = 0;

  constructor(private readonly o: AdmissionOptions) {}

  get reserved(): number {
    return this.reservedBytes;
  }

  /**
   * Why new work would be refused right now (whatever its size), or null. `waiting`: sequences already
   * waiting for a batch slot; `slotFree`: whether one more could start at once.
   */
  full(waiting: number, slotFree: boolean): string | null {
    if (!slotFree && waiting >= this.o.maxWaiting) return `every batch slot is taken and ${waiting} requests wait (queue limit ${this.o.maxWaiting})`;
    if (this.reservedBytes >= this.o.kvBudgetBytes) return `the KV-cache budget of ${mib(this.o.kvBudgetBytes)} is taken`;
    return null;
  }

  /** Reserves `bytes` for one sequence or throws EngineUnavailableError; the returned function frees them (once). */
  reserve(bytes: number, waiting: number, slotFree: boolean): () => void {
    const full = this.full(waiting, slotFree);
    if (full) throw new EngineUnavailableError(`The server is at capacity: ${full}. Please retry shortly.`, RETRY_AFTER_SECONDS);
    if (this.reservedBytes + bytes > this.o.kvBudgetBytes) {
      throw new EngineUnavailableError(
        `The server is at capacity: this request needs up to ${mib(bytes)} of KV cache and ${mib(this.o.kvBudgetBytes - this.reservedBytes)} of the ${mib(this.o.kvBudgetBytes)} budget is free. Please retry shortly or ask for fewer max_tokens.`,
        RETRY_AFTER_SECONDS,
      );
    }
    this.reservedBytes += bytes;
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      this.reservedBytes -= bytes;
    };
  }
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
