/**
 * The control loop: observe (NATS) -> decide (pure) -> act (driver), every `intervalMs`. At start the
 * desired counts come from what the driver runs, so a restarted controller carries on where the last
 * one stopped. Every change is logged with its reason and exported on /metrics.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { layerBalancedness, type HotReplica } from './balance';
import { decide, initialState, unitOwners, type ControllerState, type DecideResult } from './decide';
import type { Driver, PoolTemplate } from './drivers/driver';
import { poolObservations, replicasPerUnit, type Observer } from './observe';
import type { PoolSpec, ScalingPolicy } from './policy';

export interface ControllerOptions {
  model: { layers: number; experts: number };
  pools: PoolSpec[];
  policy: ScalingPolicy;
  driver: Driver;
  observer: Observer;
  /** Default 2000 ms. */
  intervalMs?: number;
  log?: (line: string) => void;
}

/** The controller's Prometheus metrics (its own registry: it is its own process). */
export function controllerMetrics(registry = new Registry()) {
  const labels = ['pool'] as const;
  return {
    registry,
    replicas: new Gauge({ name: 'unimoe_pool_replicas', help: 'Replicas the driver runs per pool (starting ones included).', labelNames: labels, registers: [registry] }),
    ready: new Gauge({ name: 'unimoe_pool_ready_replicas', help: 'Replicas per pool that answer NATS service discovery.', labelNames: labels, registers: [registry] }),
    desired: new Gauge({ name: 'unimoe_pool_desired_replicas', help: "The autoscaler's desired replicas per pool (the KEDA/HPA target metric).", labelNames: labels, registers: [registry] }),
    balancedness: new Gauge({ name: 'unimoe_layer_balancedness', help: 'Per layer: mean / max routed load per expert replica (1 = even), on the ready replicas.', labelNames: ['layer'] as const, registers: [registry] }),
    decisions: new Counter({ name: 'unimoe_autoscale_decisions_total', help: 'Scaling decisions per pool and direction.', labelNames: ['pool', 'direction'] as const, registers: [registry] }),
  };
}

export class Controller {
  readonly metrics = controllerMetrics();
  private state!: ControllerState;
  private hot: Record<string, HotReplica> = {};
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<unknown> = Promise.resolve();
  private rounds: Promise<unknown> = Promise.resolve();
  private readonly owners: Map<string, string>;
  private readonly log: (line: string) => void;

  constructor(private readonly o: ControllerOptions) {
    this.owners = unitOwners(o.pools, o.model.layers);
    this.log = o.log ?? ((line) => console.log(line));
  }

  /** Adopts what the driver runs (hot replicas included) as the current desired state. */
  async init(): Promise<void> {
    const running: Record<string, number> = {};
    for (const r of await this.o.driver.list()) {
      running[r.template.pool] = (running[r.template.pool] ?? 0) + 1;
      if (r.template.pool.startsWith('hot-') && r.template.experts.length === 1 && r.template.layers) {
        this.hot[r.template.pool] = { expert: r.template.experts[0]!, layers: r.template.layers };
      }
    }
    this.state = initialState(this.o.pools, running, this.hot, performance.now());
    const ready = await this.o.observer.replicas();
    const summary = [...this.o.pools.map((p) => p.name), ...Object.keys(this.hot)]
      .map((name) => `${name}=${running[name] ?? 0} (${ready.filter((r) => r.pool === name).length} ready)`)
      .join(', ');
    this.log(`[autoscale] start: ${this.o.driver.kind} driver runs ${summary || 'nothing'}`);
  }

  start(): void {
    const loop = () => {
      this.ticking = this.tick().catch((err: unknown) => this.log(`[autoscale] tick failed: ${(err as Error).message}`));
      void this.ticking.then(() => {
        if (this.timer) this.timer = setTimeout(loop, this.o.intervalMs ?? 2000);
      });
    };
    this.timer = setTimeout(loop, 0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.ticking;
  }

  /** One observe -> decide -> act round; rounds never overlap (a driver must not see two decisions at once). */
  tick(): Promise<DecideResult> {
    const round = this.rounds.then(() => this.round());
    this.rounds = round.catch(() => undefined);
    return round;
  }

  private async round(): Promise<DecideResult> {
    const { observer, driver, pools, policy, model } = this.o;
    const replicas = await observer.replicas();
    const demandByPool = new Map<string, string[]>();
    for (const unit of observer.takeDemand()) {
      const pool = this.owners.get(unit);
      if (pool) demandByPool.set(pool, [...(demandByPool.get(pool) ?? []), unit]);
    }
    const routed = observer.routedRate();
    const result = decide({ now: performance.now(), pools: poolObservations(replicas, demandByPool), routed }, pools, policy, this.state, model.layers);
    this.state = result.state;
    for (const d of result.decisions) {
      this.log(`[autoscale] pool ${d.pool}: ${d.from} -> ${d.to} replicas: ${d.reason}`);
      this.metrics.decisions.inc({ pool: d.pool, direction: d.to > d.from ? 'up' : 'down' });
    }
    // Act: base pools, hot replicas wanted now, and hot replicas no longer wanted (to zero).
    const templates: [PoolTemplate, number][] = pools.map((p) => [{ pool: p.name, experts: p.experts, layers: p.layers, encoders: p.encoders }, result.desired[p.name]!]);
    for (const [name, h] of Object.entries(result.hot)) templates.push([{ pool: name, experts: [h.expert], layers: h.layers }, result.desired[name]!]);
    for (const [name, h] of Object.entries(this.hot)) if (!result.hot[name]) templates.push([{ pool: name, experts: [h.expert], layers: h.layers }, 0]);
    this.hot = result.hot;
    for (const [t, n] of templates) await driver.scale(t, n);

    const running = await driver.list();
    this.metrics.replicas.reset();
    this.metrics.desired.reset();
    this.metrics.ready.reset();
    for (const [t, n] of templates) {
      this.metrics.desired.set({ pool: t.pool }, n);
      this.metrics.replicas.set({ pool: t.pool }, running.filter((r) => r.template.pool === t.pool).length);
      this.metrics.ready.set({ pool: t.pool }, replicas.filter((r) => r.pool === t.pool).length);
    }
    if (routed) {
      const perUnit = replicasPerUnit(replicas, model.layers, model.experts);
      routed.forEach((row, l) => this.metrics.balancedness.set({ layer: String(l) }, layerBalancedness(row, perUnit[l]!)));
    }
    return result;
  }

  /** Desired replicas per pool right now (tests, status). */
  desired(): Record<string, number> {
    return Object.fromEntries([...Object.entries(this.state.pools), ...Object.entries(this.state.hot)].map(([k, v]) => [k, v.desired]));
  }
}
