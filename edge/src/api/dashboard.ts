/**
 * `/dashboard`: the operator's expert-load view - a live heatmap of routed tokens per layer x expert
 * (switchable by modality), replicas per pool over time and balancedness per layer. The page
 * (dashboard-page.ts) draws with Apache ECharts, served from node_modules by this edge (no CDN);
 * `/dashboard/data` is its JSON.
 */
import { Hono } from 'hono';
import { layerBalancedness } from '../autoscale/balance';
import type { PoolView } from '../dispatch/pool-telemetry';
import { DASHBOARD_HTML } from './dashboard-page';
import { sumGrids, type RoutedGrid, type RoutedTokens } from './routed-tokens';

export interface DashboardSource {
  model: string;
  routed: RoutedTokens;
  /** Split mode: replicas per pool and per unit from NATS service discovery. */
  pools?: PoolView;
  /** The charting library's browser bundle (read by the Node entry point). */
  echarts: () => Promise<string>;
}

export interface DashboardData {
  model: string;
  layers: number;
  experts: number;
  windowSeconds: number;
  /** Tokens per second over the window, per modality and 'all'. */
  rate: Record<string, RoutedGrid>;
  /** Tokens since the edge started, per modality and 'all'. */
  total: Record<string, RoutedGrid>;
  replicas: { at: number; pools: Record<string, number> }[];
  /** Per layer, of the window's load over the ready replicas (every unit counts once in embedded mode). */
  balancedness: number[];
}

const WINDOW_S = 30;
const MODALITIES = ['text', 'image', 'audio', 'video'];

export function dashboardData(src: DashboardSource): DashboardData {
  const { layers, experts } = src.routed;
  const withAll = (g: Record<string, RoutedGrid>) => {
    const zero = () => Array.from({ length: layers }, () => new Array<number>(experts).fill(0));
    return { all: sumGrids(g, layers, experts), ...Object.fromEntries(MODALITIES.map((m) => [m, g[m] ?? zero()])) };
  };
  const rate = withAll(src.routed.rate(WINDOW_S * 1000));
  const perUnit = src.pools?.replicasPerUnit() ?? rate.all.map((row) => row.map(() => 1));
  return {
    model: src.model,
    layers,
    experts,
    windowSeconds: WINDOW_S,
    rate,
    total: withAll(src.routed.total()),
    replicas: src.pools?.history() ?? [],
    balancedness: rate.all.map((row, l) => layerBalancedness(row, perUnit[l]!)),
  };
}

export function dashboardRoutes(src: DashboardSource): Hono {
  const app = new Hono();
  app.get('/', (c) => c.html(DASHBOARD_HTML));
  app.get('/data', (c) => c.json(dashboardData(src)));
  app.get('/echarts.min.js', async (c) => c.body(await src.echarts(), 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'max-age=3600' }));
  return app;
}
