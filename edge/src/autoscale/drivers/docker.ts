/**
 * The docker driver: scales the Compose services of expert pools through the Docker Engine API
 * (dockerode over DOCKER_HOST or /var/run/docker.sock) the way `docker compose up --scale` does -
 * a new replica is a clone of an existing container of the pool (same image, command, environment,
 * mounts, networks and aliases, Compose labels with the next container number), a surplus replica is
 * stopped (SIGTERM: the worker drains) and removed, newest first. Pool containers carry the label
 * `unimoe.pool=NAME`. Scaling to zero stops the last container but keeps it as the template the next
 * scale-up starts again. Hot-expert replicas are clones of any pool container whose worker flags
 * (`--pool`, `--experts`, `--layers`, `--replica`) are rewritten. Run inside a Compose project's container
 * (the `autoscaler` service), it manages that project's pools only: two projects on one host (a v1 and a
 * v2 side by side) each have a `pool-a` whose containers must not be counted or cloned as one pool.
 */
import { readFile } from 'node:fs/promises';
import Docker from 'dockerode';
import { formatIndexList, parseIndexList } from '@unimoe/shared/index-list';
import type { Driver, DriverReplica, PoolTemplate } from './driver';

const POOL_LABEL = 'unimoe.pool';
const COMPOSE_PROJECT = 'com.docker.compose.project';
const COMPOSE_SERVICE = 'com.docker.compose.service';
const COMPOSE_NUMBER = 'com.docker.compose.container-number';
/** Seconds a stopping worker gets to drain before Docker kills it. */
const STOP_TIMEOUT_S = 30;
const BUILTIN_NETWORKS = new Set(['none', 'host', 'bridge', 'default']);

export class DockerDriver implements Driver {
  readonly kind = 'docker';

  private constructor(
    private readonly docker: Docker,
    /** The Compose project this driver is confined to (its own container's), if it runs in one. */
    readonly project?: string,
  ) {}

  /** Connects (DOCKER_HOST or the default socket), checks the daemon answers and finds its own Compose project. */
  static async connect(opts: Docker.DockerOptions = {}): Promise<DockerDriver> {
    const docker = new Docker(opts);
    try {
      await docker.ping();
    } catch (err) {
      const where = opts.socketPath ?? process.env.DOCKER_HOST ?? '/var/run/docker.sock';
      throw new Error(`the docker driver cannot reach the Docker Engine at ${where}: ${(err as Error).message}`);
    }
    return new DockerDriver(docker, await ownComposeProject(docker));
  }

  async list(): Promise<DriverReplica[]> {
    const running = await this.docker.listContainers({ filters: { label: this.labels(POOL_LABEL), status: ['running'] } });
    return running.map((c) => ({ id: c.Names[0]?.replace(/^\//, '') ?? c.Id, template: templateOf(c.Labels[POOL_LABEL]!, c.Command) }));
  }

  async scale(template: PoolTemplate, replicas: number): Promise<void> {
    const all = await this.docker.listContainers({ all: true, filters: { label: this.labels(`${POOL_LABEL}=${template.pool}`) } });
    // Oldest first: Created has one-second resolution, Compose's container number breaks ties.
    const running = all.filter((c) => c.State === 'running').sort((a, b) => a.Created - b.Created || Number(a.Labels[COMPOSE_NUMBER] ?? 0) - Number(b.Labels[COMPOSE_NUMBER] ?? 0));
    const stopped = all.filter((c) => c.State !== 'running');
    let missing = replicas - running.length;
    for (const c of stopped) {
      if (missing <= 0) break;
      await this.docker.getContainer(c.Id).start();
      missing--;
    }
    if (missing > 0) {
      const source = all[0] ?? (await this.anyPoolContainer());
      if (!source) throw new Error(`pool ${template.pool}: no container labelled ${POOL_LABEL} to clone (start the Compose services once)`);
      for (let i = 0; i < missing; i++) await this.clone(source.Id, template);
    }
    const surplus = running.slice(Math.max(0, replicas)).reverse();
    for (const [i, c] of surplus.entries()) {
      const container = this.docker.getContainer(c.Id);
      await container.stop({ t: STOP_TIMEOUT_S }).catch(ignoreNotRunning);
      // Scaling a base pool to zero keeps its last container, stopped, as the template to start again.
      const keep = replicas === 0 && !template.pool.startsWith('hot-') && i === surplus.length - 1 && stopped.length === 0;
      if (!keep) await container.remove();
    }
  }

  async stopAll(): Promise<void> {
    for (const c of await this.docker.listContainers({ filters: { label: this.labels(POOL_LABEL), status: ['running'] } })) {
      await this.docker.getContainer(c.Id).stop({ t: STOP_TIMEOUT_S }).catch(ignoreNotRunning);
    }
  }

  /** A label filter, confined to this driver's Compose project when it has one. */
  private labels(label: string): string[] {
    return this.project === undefined ? [label] : [label, `${COMPOSE_PROJECT}=${this.project}`];
  }

  private async anyPoolContainer(): Promise<Docker.ContainerInfo | undefined> {
    return (await this.docker.listContainers({ all: true, filters: { label: this.labels(POOL_LABEL) } }))[0];
  }

  /** `docker compose up --scale`'s clone: the source's config, the next container number, the pool's worker flags. */
  private async clone(sourceId: string, template: PoolTemplate): Promise<void> {
    const src = await this.docker.getContainer(sourceId).inspect();
    const labels: Record<string, string> = { ...src.Config.Labels, [POOL_LABEL]: template.pool };
    const project = labels[COMPOSE_PROJECT];
    const service = labels[COMPOSE_SERVICE];
    const base = project && service ? `${project}-${service}` : `unimoe-${template.pool}`;
    const siblings = await this.docker.listContainers({ all: true, filters: project && service ? { label: [`${COMPOSE_PROJECT}=${project}`, `${COMPOSE_SERVICE}=${service}`] } : { name: [base] } });
    const number = 1 + Math.max(0, ...siblings.map((c) => Number(c.Labels[COMPOSE_NUMBER]) || 0));
    const name = `${base}-${template.pool.startsWith('hot-') ? `${template.pool}-` : ''}${number}`;
    labels[COMPOSE_NUMBER] = String(number);
    // User-defined networks (Compose's) get the service name as alias; the built-in ones take none.
    const networks = Object.fromEntries(
      Object.entries(src.NetworkSettings.Networks ?? {})
        .filter(([net]) => !BUILTIN_NETWORKS.has(net))
        .map(([net, cfg]) => [net, { Aliases: service ? [service] : (cfg.Aliases ?? []) }]),
    );
    const created = await this.docker.createContainer({
      name,
      Image: src.Config.Image,
      Entrypoint: src.Config.Entrypoint ?? undefined,
      Cmd: workerCommand(src.Config.Cmd ?? [], template, name),
      Env: src.Config.Env,
      WorkingDir: src.Config.WorkingDir,
      User: src.Config.User,
      Labels: labels,
      HostConfig: src.HostConfig,
      NetworkingConfig: { EndpointsConfig: networks },
    });
    await created.start();
  }
}

/** The worker flags for this pool in a copy of `cmd`: --pool, --experts, --layers, --encoders and --replica set, others kept. */
export function workerCommand(cmd: readonly string[], t: PoolTemplate, replica: string): string[] {
  const out: string[] = [];
  const replaced = new Set(['--pool', '--experts', '--layers', '--encoders', '--replica']);
  for (let i = 0; i < cmd.length; i++) {
    if (replaced.has(cmd[i]!)) i++;
    else out.push(cmd[i]!);
  }
  out.push('--pool', t.pool);
  if (t.experts.length > 0) out.push('--experts', formatIndexList(t.experts));
  if (t.layers) out.push('--layers', formatIndexList(t.layers));
  if (t.encoders?.length) out.push('--encoders', t.encoders.join(','));
  out.push('--replica', replica);
  return out;
}

/** A running container's pool template, read back from its command line. */
function templateOf(pool: string, command: string): PoolTemplate {
  const words = command.split(/\s+/);
  const flag = (f: string) => {
    const i = words.indexOf(f);
    return i >= 0 ? words[i + 1] : undefined;
  };
  const experts = flag('--experts');
  const layers = flag('--layers');
  const encoders = flag('--encoders');
  return {
    pool,
    experts: experts ? parseIndexList(experts, '--experts') : [],
    ...(layers ? { layers: parseIndexList(layers, '--layers') } : {}),
    ...(encoders ? { encoders: encoders.split(',') } : {}),
  };
}

/**
 * The Compose project of the container this process runs in, on the daemon it talks to: Docker bind-mounts
 * /etc/hostname from <data-root>/containers/<id>/, which names the container in /proc/self/mountinfo.
 * Undefined outside a container, or when the socket is another daemon's.
 */
async function ownComposeProject(docker: Docker): Promise<string | undefined> {
  const mounts = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const id = /\/containers\/([0-9a-f]{64})\/hostname\s/.exec(mounts)?.[1];
  if (!id) return undefined;
  const self = await docker
    .getContainer(id)
    .inspect()
    .catch(() => undefined);
  return self?.Config.Labels?.[COMPOSE_PROJECT];
}

function ignoreNotRunning(err: { statusCode?: number }): void {
  if (err.statusCode !== 304) throw err; // 304: already stopped
}
