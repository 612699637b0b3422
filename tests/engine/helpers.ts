/** Engine-tier test pieces: `unimoe engine` processes, their load over NATS, and comparing two servers' answers. */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { engineReplicaSubject, type WireModel } from '@unimoe/shared/wire/subjects';
import type { EngineLoad } from '@unimoe/edge/engine-client/protocol';
import { REPO } from '../split/cluster';

export interface EngineProcess {
  id: string;
  child: ChildProcess;
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

/** `unimoe engine <bundle> --nats URL --id ID ...` as a user runs it. */
export function spawnEngine(bundle: string, natsUrl: string, id: string, extra: string[] = []): EngineProcess {
  const child = spawnTied(process.execPath, ['--import', 'tsx', join(REPO, 'edge', 'src', 'cli', 'main.ts'), 'engine', bundle, '--nats', natsUrl, '--id', id, ...extra], {
    cwd: REPO,
    env: { ...process.env, UNIMOE_THREADS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (out.includes(`engine ${id} ready`)) {
        child.stdout!.off('data', onData);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    void exited.then(({ code, signal }) => reject(new Error(`engine ${id} exited (${code ?? signal}) before it was ready:\n${out}`)));
  });
  ready.catch(() => {});
  return { id, child, ready, exited, output: () => out };
}

export async function stopEngine(e: EngineProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!e) return;
  if (e.child.exitCode === null && e.child.signalCode === null) e.child.kill(signal);
  await e.exited;
}

/** Reads engines' load from their stats subjects. */
export class LoadProbe {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly model: WireModel,
  ) {}

  static async open(natsUrl: string, model: WireModel): Promise<LoadProbe> {
    return new LoadProbe(await connect({ servers: natsUrl }), model);
  }

  async load(engine: string): Promise<EngineLoad> {
    const msg = await this.nc.request(engineReplicaSubject(this.model, engine, 'stats'), new Uint8Array(0), { timeout: 5000 });
    return JSON.parse(new TextDecoder().decode(msg.data)) as EngineLoad;
  }

  /** Polls until `cond` holds for the engine's load (fails after `timeoutMs`). */
  async waitFor(engine: string, cond: (l: EngineLoad) => boolean, what: string, timeoutMs = 20_000): Promise<EngineLoad> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const l = await this.load(engine);
      if (cond(l)) return l;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(l)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  close(): Promise<void> {
    return this.nc.close();
  }
}

/** An answer without what differs between any two responses (ids, timestamps). */
export function comparable(body: unknown): unknown {
  return JSON.parse(JSON.stringify(body), (k, v) => (k === 'id' || k === 'created' ? undefined : v));
}
