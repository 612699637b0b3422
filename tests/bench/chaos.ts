/**
 * `pnpm bench:chaos`: 32 concurrent greedy streams against a real split deployment (nats-server, two
 * pools of two replica processes, the edge) through each fault - kill -9 of a replica, SIGSTOP of a
 * replica for 5 s, a nats-server restart, a whole pool restarting. For each: requests completed and
 * failed, how many outputs equal the fault-free run's, and the worst added stall (the longest gap
 * between two chunks of any stream, minus the fault-free run's). The first row reproduces the old
 * behaviour (no re-send before a 10 s per-attempt timeout) on kill -9, as the baseline.
 */
import { fmt, printTable } from './table';
import { FAULTS, identicalTo, PROMPTS, runStreams, startChaosCluster, worstGapMs, type ChaosCluster, type Fault, type StreamOutcome } from '../chaos/harness';

const STREAMS = 32;
const MAX_TOKENS = 200;
const prompts = PROMPTS(STREAMS);

async function measure(cluster: ChaosCluster, faults: Fault[], label: (f: Fault) => string): Promise<(string | number)[][]> {
  const run = (fault?: () => Promise<void>) => runStreams(cluster.edge.url, cluster.edge.manifest.name, prompts, MAX_TOKENS, fault);
  const reference = (await run()).outcomes;
  const failedReference = reference.filter((o) => o.error).length;
  if (failedReference > 0) throw new Error(`the fault-free run failed ${failedReference} streams: ${reference.find((o) => o.error)!.error}`);
  const calm = worstGapMs(reference);
  const rows: (string | number)[][] = [[label('none' as Fault), STREAMS, 0, `${STREAMS}/${STREAMS}`, fmt(calm, 0), '-', '-']];
  for (const fault of faults) {
    const started = performance.now();
    const { outcomes } = await run(() => cluster.inject(fault));
    const wall = performance.now() - started;
    const failed = outcomes.filter((o: StreamOutcome) => o.error).length;
    const worst = worstGapMs(outcomes);
    rows.push([label(fault), STREAMS - failed, failed, `${identicalTo(outcomes, reference)}/${STREAMS}`, fmt(worst, 0), fmt(Math.max(0, worst - calm), 0), fmt(wall / 1000, 1)]);
    console.error(`[bench] ${label(fault)}: done`);
  }
  return rows;
}

const header = ['fault', 'completed', 'failed', 'identical to fault-free', 'worst gap (ms)', 'worst added stall (ms)', 'run (s)'];
const rows: (string | number)[][] = [];

// Baseline: the old dispatch - an unanswered request waited out a 10 s timeout before its re-send.
const old = await startChaosCluster({ dispatch: { timeoutMs: 30_000, hedging: { minHedgeMs: 10_000, maxHedgeMs: 10_000, initialHedgeMs: 10_000 } } });
try {
  rows.push(...(await measure(old, ['kill -9 of a replica'], (f) => `old dispatch (10 s timeout), ${f === ('none' as Fault) ? 'no fault' : f}`)));
} finally {
  await old.close();
}
const cluster = await startChaosCluster();
try {
  rows.push(...(await measure(cluster, FAULTS, (f) => (f === ('none' as Fault) ? 'no fault' : f))));
} finally {
  await cluster.close();
}
printTable(`Chaos: ${STREAMS} concurrent streams x ${MAX_TOKENS} tokens, tiny Uni-MoE 4e, pools a (experts 0-1) and b (2-3) x 2 replicas; faults hit pool a`, header, rows);
console.log('\nworst added stall = worst gap between two chunks of any stream minus that of the fault-free run just before.');
process.exit(0);
