/**
 * `unimoe nats-auth <bundle> --out DIR --pool NAME=SPEC ... [--tls-cert F --tls-key F [--tls-ca F]]`: writes a
 * nats-server configuration with one nkey user per role (edge, engine, autoscaler, one per worker pool) and its
 * subject permissions, and each role's nkey seed (mode 0600) to hand to that role with --nats-nkey-seed
 * or NATS_NKEY_SEED.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { nkeys } from 'nats';
import { bundleSubjectPrefix, wireModel } from '@unimoe/shared/wire/subjects';
import { noUnits, resolveBundle } from '../resolve-bundle';
import { readManifest } from '@unimoe/shared/bundle/load';
import { CliError, parseCommand } from '../args';
import { authorizationConfig, parsePoolSpec, rolePermissions, tlsConfig } from '../nats-permissions';

const USAGE = 'unimoe nats-auth <bundle-or-s3-uri> --out DIR --pool NAME=EXPERTS[,vision][,audio] [--pool ...] [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]';

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const { values, positionals } = parseCommand(argv, { out: s, pool: { type: 'string', multiple: true }, 'tls-cert': s, 'tls-key': s, 'tls-ca': s }, USAGE);
  if (positionals.length !== 1) throw new CliError(`expected one <bundle-or-s3-uri>\nusage: ${USAGE}`);
  if (!values.out) throw new CliError(`--out DIR is required\nusage: ${USAGE}`);
  if (!values.pool?.length) throw new CliError(`at least one --pool NAME=SPEC is required (one per worker pool)\nusage: ${USAGE}`);
  if (Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) throw new CliError('--tls-cert and --tls-key go together');
  const manifest = await readManifest(await resolveBundle(positionals[0]!, noUnits));
  let pools;
  try {
    pools = values.pool.map((p) => parsePoolSpec(p, manifest));
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const roles = rolePermissions(manifest, pools).map((permissions) => ({ permissions, pair: nkeys.createUser() }));
  const out = resolve(values.out);
  await mkdir(out, { recursive: true, mode: 0o700 });
  for (const { permissions, pair } of roles) {
    const file = join(out, `${permissions.name}.nk`);
    await writeFile(file, `${new TextDecoder().decode(pair.getSeed())}\n`, { mode: 0o600 });
    await chmod(file, 0o600); // an existing file keeps its old mode with writeFile
  }
  const tls = values['tls-cert'] ? tlsConfig({ cert: resolve(values['tls-cert']), key: resolve(values['tls-key']!), ca: values['tls-ca'] && resolve(values['tls-ca']) }) : '';
  const conf = join(out, 'nats-server.conf');
  const header = `# unimoe nats-auth for ${manifest.name}: subjects ${bundleSubjectPrefix(wireModel(manifest))}.>\n# Run: nats-server -c ${conf} [-a HOST -p PORT]\n`;
  await writeFile(conf, header + authorizationConfig(roles.map(({ permissions, pair }) => ({ permissions, nkey: pair.getPublicKey() }))) + tls, { mode: 0o600 });
  console.error(`[nats-auth] ${manifest.name}: ${roles.length} roles, subjects ${bundleSubjectPrefix(wireModel(manifest))}.>`);
  for (const { permissions: p } of roles) {
    const who = p.role.kind === 'worker' ? `unimoe worker ... --pool ${p.role.pool}` : p.role.kind === 'edge' ? 'unimoe serve ...' : p.role.kind === 'engine' ? 'unimoe engine ...' : 'the autoscaler';
    console.error(`  ${who}: --nats-nkey-seed ${join(out, `${p.name}.nk`)}  (or NATS_NKEY_SEED)`);
  }
  console.log(conf);
  return 0;
}
