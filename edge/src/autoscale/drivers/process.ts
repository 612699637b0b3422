/**
 * The process driver: replicas are `unimoe worker` child processes on this machine (development,
 * tests, `unimoe cluster`). Each replica is started detached with `--replica ID` and recorded as
 * `<stateDir>/replicas/<ID>.json` ({ pid, template }); its output goes to `<stateDir>/logs/<ID>.log`.
 * A restarted controller reads those files and keeps the processes that still run that replica id
 * (checked against /proc/<pid>/cmdline, so a reused pid is not mistaken for a worker), which is how it
 * neither loses nor doubles replicas. Stopping is SIGTERM: the worker drains and exits by itself.
 */
import { spawn } from 'node:child_process';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, closeSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatIndexList } from '@unimoe/shared/index-list';
import type { Driver, DriverReplica, PoolTemplate } from './driver';

const MAIN = fileURLToPath(new URL('../../cli/main.ts', import.meta.url));

export interface ProcessDriverOptions {
  /** Bundle directory or s3:// URI the workers load. */
  bundle: string;
  natsUrl: string;
  /** Where replica records and logs live; one directory per controller deployment. */
  stateDir: string;
  /** Extra environment for the workers (e.g. UNIMOE_THREADS). */
  env?: Record<string, string>;
  /** Extra worker flags, e.g. ['--stats-interval', '1000']. */
  workerArgs?: string[];
  /** Worker output goes here too when given (cluster mode prints it). */
  inheritOutput?: boolean;
  /** Replicas die with this process (`unimoe cluster`); default: they outlive a controller restart. */
  tieToParent?: boolean;
}

interface ReplicaRecord {
  pid: number;
  id: string;
  template: PoolTemplate;
  startedAt: string;
}

export class ProcessDriver implements Driver {
  readonly kind = 'process';
  private readonly replicasDir: string;
  private readonly logsDir: string;

  constructor(private readonly o: ProcessDriverOptions) {
    this.replicasDir = join(o.stateDir, 'replicas');
    this.logsDir = join(o.stateDir, 'logs');
    mkdirSync(this.replicasDir, { recursive: true });
    mkdirSync(this.logsDir, { recursive: true });
  }

  async list(): Promise<DriverReplica[]> {
    const out: DriverReplica[] = [];
    for (const r of await this.records()) out.push({ id: r.id, template: r.template });
    return out;
  }

  async scale(template: PoolTemplate, replicas: number): Promise<void> {
    const mine = (await this.records()).filter((r) => r.template.pool === template.pool).sort((a, b) => a.startedAt.localeCompare(b.startedAt));
    for (let i = mine.length; i < replicas; i++) await this.start(template);
    for (const r of mine.slice(replicas).reverse()) await this.stop(r);
  }

  async stopAll(): Promise<void> {
    const records = await this.records();
    await Promise.all(records.map((r) => this.stop(r)));
    // Wait for the drains, so callers (tests, cluster) leave no process behind.
    const deadline = Date.now() + 30_000;
    while (records.some((r) => alive(r.pid)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    for (const r of records) if (alive(r.pid)) process.kill(r.pid, 'SIGKILL');
  }

  /** The pids of the replicas it runs (tests check that they are gone). */
  async pids(): Promise<number[]> {
    return (await this.records()).map((r) => r.pid);
  }

  private async start(template: PoolTemplate): Promise<void> {
    const id = `${template.pool}-${randomBytes(4).toString('hex')}`;
    const args = ['--import', 'tsx', MAIN, 'worker', this.o.bundle, '--pool', template.pool];
    if (template.experts.length > 0) args.push('--experts', formatIndexList(template.experts));
    if (template.layers) args.push('--layers', formatIndexList(template.layers));
    if (template.encoders?.length) args.push('--encoders', template.encoders.join(','));
    args.push('--nats', this.o.natsUrl, '--replica', id, ...(this.o.workerArgs ?? []));
    const log = openSync(join(this.logsDir, `${id}.log`), 'a');
    const output = this.o.inheritOutput ? 'inherit' : log;
    const options = { stdio: ['ignore', output, output] as ('ignore' | 'inherit' | number)[], env: { ...process.env, ...this.o.env } };
    // Detached by default: a controller that exits or restarts leaves its replicas serving.
    const child = this.o.tieToParent ? spawnTied(process.execPath, args, options) : spawn(process.execPath, args, { ...options, detached: true });
    closeSync(log);
    if (!this.o.tieToParent) child.unref();
    if (child.pid === undefined) throw new Error(`could not start a worker for pool ${template.pool}`);
    const file = join(this.replicasDir, `${id}.json`);
    // A replica that dies on its own stops counting at once (this controller's children only; others via list()).
    child.once('exit', () => void rm(file, { force: true }));
    const record: ReplicaRecord = { pid: child.pid, id, template, startedAt: new Date().toISOString() };
    await writeFile(file, JSON.stringify(record));
  }

  private async stop(r: ReplicaRecord): Promise<void> {
    await rm(join(this.replicasDir, `${r.id}.json`), { force: true });
    try {
      process.kill(r.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }

  /** Replica records whose process still runs that replica; stale ones are removed. */
  private async records(): Promise<ReplicaRecord[]> {
    const out: ReplicaRecord[] = [];
    for (const name of await readdir(this.replicasDir)) {
      if (!name.endsWith('.json')) continue;
      const file = join(this.replicasDir, name);
      let r: ReplicaRecord;
      try {
        r = JSON.parse(await readFile(file, 'utf8')) as ReplicaRecord;
      } catch {
        continue; // being written or removed right now
      }
      if (await runsReplica(r.pid, r.id)) out.push(r);
      else await rm(file, { force: true });
    }
    return out;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function runsReplica(pid: number, id: string): Promise<boolean> {
  if (!alive(pid)) return false;
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.split('\0').includes(id);
  } catch {
    return process.platform !== 'linux'; // no /proc: trust the pid
  }
}
