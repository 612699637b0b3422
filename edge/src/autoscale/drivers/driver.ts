/**
 * Acting on a decision: a driver starts and stops replicas of a pool. Drivers report what they run
 * (so a restarted controller adopts it instead of starting it twice) and are idempotent: scale(p, n)
 * twice starts nothing the second time.
 */

/** What one replica of a pool runs: `unimoe worker --pool NAME [--experts LIST [--layers LIST]] [--encoders LIST]`. */
export interface PoolTemplate {
  pool: string;
  /** Empty for an encoders-only pool. */
  experts: number[];
  /** Undefined: every layer. */
  layers?: number[];
  /** `--encoders` (vision, audio). */
  encoders?: string[];
}

/** A replica the driver runs (starting or serving). */
export interface DriverReplica {
  id: string;
  template: PoolTemplate;
}

export interface Driver {
  readonly kind: string;
  /** Every replica this driver runs now, by pool. */
  list(): Promise<DriverReplica[]>;
  /** Starts or stops replicas until `replicas` of the pool run (newest stop first). */
  scale(template: PoolTemplate, replicas: number): Promise<void>;
  /** Stops every replica it runs (cluster shutdown, tests); the controller itself never calls it. */
  stopAll(): Promise<void>;
}
