/**
 * Per-role NATS permissions for one bundle (see docs/security.md). Every subject of the bundle starts with
 * `unimoe.<model>.<hash>`, so these rules also keep other bundles (and other versions) out of reach.
 *  - edge: requests to any unit of the bundle; reads the pools' stats; its own inbox; publishes demand
 *    (scale from zero) and routed-token counts; pings the workers' NATS service (`$SRV`) for the dashboard.
 *  - worker of pool P: takes requests only on the subjects of P's units; publishes only P's stats and
 *    the part fetches of encoder requests (to the edge's inbox); answers the requests it received, including
 *    `$SRV.PING|INFO|STATS` and its load endpoint (NATS services protocol).
 *  - autoscaler: reads the stats, demand and routed-token counts; asks the workers' `$SRV` endpoints.
 *  - engine (`unimoe engine`, the engine tier): takes the bundle's engine subjects (generate, cancel, discovery,
 *    files, grammar checks); publishes request events and feature fetches to the edge's inbox; with pools,
 *    sends unit requests as the edge does. The edge may also publish to the engine subjects.
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { roleInboxPrefix, type NatsRole } from '@unimoe/shared/runtime/nats-auth';
import { bundleSubjectPrefix, engineDiscoverSubject, expertGroupsOfUnits, statsSubject, unitSubject, wireModel } from '@unimoe/shared/wire/subjects';
import { parseIndexList } from '@unimoe/shared/index-list';
import { ENCODERS, selectEncoderUnits, selectExpertUnits, type EncoderName } from '@unimoe/gpu-worker/units';

export interface PoolPlan {
  pool: string;
  units: string[];
}

export interface RolePermissions {
  /** File-name friendly: `edge`, `autoscaler`, `worker-<pool>`. */
  name: string;
  role: NatsRole;
  publish: string[];
  subscribe: string[];
  /** May publish to the reply subject of a request it received (once, as NATS allows). */
  allowResponses: boolean;
}

/** `--pool a=0-1`, `--pool enc=vision,audio`, `--pool b=2-3,audio`: a pool and what it hosts (experts on every layer). */
export function parsePoolSpec(text: string, manifest: Manifest): PoolPlan {
  const m = /^([A-Za-z0-9_-]+)=(.+)$/.exec(text);
  if (!m) throw new Error(`--pool ${JSON.stringify(text)}: expected NAME=EXPERTS[,vision][,audio], e.g. a=0-1 or enc=vision,audio`);
  const items = m[2]!.split(',').map((s) => s.trim());
  const encoders = items.filter((i): i is EncoderName => Object.hasOwn(ENCODERS, i));
  const experts = items.filter((i) => !Object.hasOwn(ENCODERS, i)).join(',');
  const specs = [
    ...(experts ? selectExpertUnits(manifest, parseIndexList(experts, `--pool ${m[1]}`)) : []),
    ...selectEncoderUnits(manifest, encoders),
  ];
  return { pool: m[1]!, units: specs.map((s) => s.name) };
}

export function rolePermissions(manifest: Manifest, pools: PoolPlan[]): RolePermissions[] {
  const wire = wireModel(manifest);
  const prefix = bundleSubjectPrefix(wire);
  const inbox = (role: NatsRole) => `${roleInboxPrefix(role)}.>`;
  const edge: NatsRole = { kind: 'edge' };
  const engine: NatsRole = { kind: 'engine' };
  const autoscaler: NatsRole = { kind: 'autoscaler' };
  const discover = engineDiscoverSubject(manifest.name);
  /** What an edge or an engine with pools sends to the units. */
  const unitRequests = [`${prefix}.unit.>`, `${prefix}.replica.>`, `${prefix}.demand`, `${prefix}.routed`, '$SRV.>'];
  const names = new Set<string>();
  const workers = pools.map((p): RolePermissions => {
    if (names.has(p.pool)) throw new Error(`pool ${p.pool} is given twice`);
    names.add(p.pool);
    const role: NatsRole = { kind: 'worker', pool: p.pool };
    return {
      name: `worker-${p.pool}`,
      role,
      // Encoder part fetches go to the inbox of whoever asked: an edge, or an engine with pools.
      publish: [statsSubject(wire, p.pool), inbox(edge), inbox(engine)],
      // Its units' and layer groups' shared subjects, and the same on any replica's own subject (re-sends; docs/wire.md).
      subscribe: [...[...p.units, ...expertGroupsOfUnits(p.units)].flatMap((u) => [unitSubject(wire, u), `${prefix}.replica.*.unit.${u}`]), inbox(role), '$SRV.>', `${prefix}.load.>`],
      allowResponses: true,
    };
  });
  return [
    {
      name: 'edge',
      role: edge,
      publish: [...unitRequests, `${prefix}.engine.>`, discover],
      subscribe: [inbox(edge), `${prefix}.stats.>`],
      allowResponses: true,
    },
    {
      name: 'engine',
      role: engine,
      publish: [...unitRequests, inbox(edge)],
      subscribe: [inbox(engine), `${prefix}.engine.>`, discover],
      allowResponses: true,
    },
    {
      name: 'autoscaler',
      role: autoscaler,
      publish: ['$SRV.>', `${prefix}.load.>`],
      subscribe: [`${prefix}.stats.>`, `${prefix}.demand`, `${prefix}.routed`, inbox(autoscaler)],
      allowResponses: false,
    },
    ...workers,
  ];
}

/** A nats-server `authorization` block: one nkey user per role with its permissions. */
export function authorizationConfig(roles: { permissions: RolePermissions; nkey: string }[]): string {
  const list = (subjects: string[]) => (subjects.length ? `{ allow: ${JSON.stringify(subjects)} }` : `{ deny: [">"] }`);
  const users = roles.map(({ permissions: p, nkey }) =>
    [
      `    # ${p.name}`,
      `    {`,
      `      nkey: ${JSON.stringify(nkey)}`,
      `      permissions: {`,
      `        publish: ${list(p.publish)}`,
      `        subscribe: ${list(p.subscribe)}`,
      ...(p.allowResponses ? ['        allow_responses: true'] : []),
      `      }`,
      `    }`,
    ].join('\n'),
  );
  return `authorization {\n  users: [\n${users.join('\n')}\n  ]\n}\n`;
}

export function tlsConfig(tls: { cert: string; key: string; ca?: string }): string {
  const lines = [`  cert_file: ${JSON.stringify(tls.cert)}`, `  key_file: ${JSON.stringify(tls.key)}`];
  // With a CA, clients must present a certificate it signed (mutual TLS).
  if (tls.ca) lines.push(`  ca_file: ${JSON.stringify(tls.ca)}`, '  verify: true');
  return `tls {\n${lines.join('\n')}\n}\n`;
}
