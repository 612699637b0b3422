/**
 * `pnpm workers:keys [--remote] create NAME | list | revoke ID`: API keys in the Worker's D1 database: the
 * local one `pnpm workers:dev` serves (migrated first), or with --remote the deployed one. The new key is
 * printed alone on the last line. Keys are made and hashed as the Node edge makes them
 * (edge/src/db/api-key.ts); D1 is reached through `wrangler d1 execute`.
 */
import { newApiKey } from '../../edge/src/db/api-key';
import { localStateDir, migrateLocalD1, queryD1, type D1Target } from './wrangler';

const USAGE = 'pnpm workers:keys [--remote] create NAME | list | revoke ID   (local D1 under WORKERS_STATE_DIR, default infra/workers/.wrangler/state)';

/** A SQL string literal: D1's `execute --command` takes no bound parameters. */
const quote = (text: string) => `'${text.replace(/'/g, "''")}'`;

async function main(argv: string[]): Promise<number> {
  const remote = argv.includes('--remote');
  const [action, arg, ...extra] = argv.filter((a) => a !== '--remote');
  const valid = (action === 'create' && arg?.trim()) || (action === 'list' && arg === undefined) || (action === 'revoke' && /^\d+$/.test(arg ?? ''));
  if (!valid || extra.length > 0) {
    console.error(`usage: ${USAGE}`);
    return 2;
  }
  let target: D1Target = 'remote';
  if (!remote) {
    target = { stateDir: localStateDir() };
    await migrateLocalD1(target.stateDir);
  }
  const where = remote ? 'the deployed' : 'the local';
  if (action === 'create') {
    const { key, prefix, hash } = await newApiKey();
    const [row] = await queryD1(
      target,
      `INSERT INTO api_keys (name, prefix, hash, created_at) VALUES (${quote(arg!.trim())}, ${quote(prefix)}, ${quote(hash)}, ${Date.now()}) RETURNING id`,
    );
    console.log(`created key ${String(row?.id)} "${arg!.trim()}" (${prefix}...) in ${where} D1 database. It is shown only this once; store it now:`);
    console.log(key);
    return 0;
  }
  if (action === 'list') {
    const rows = await queryD1(target, 'SELECT id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY id');
    for (const r of rows) {
      const revoked = r.revoked_at === null ? '-' : new Date(Number(r.revoked_at)).toISOString();
      console.log(`${String(r.id)}  ${String(r.name)}  ${String(r.prefix)}  ${new Date(Number(r.created_at)).toISOString()}  ${revoked}`);
    }
    return 0;
  }
  const [row] = await queryD1(target, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, ${Date.now()}) WHERE id = ${Number(arg)} RETURNING name`);
  if (!row) {
    console.error(`no API key has id ${arg} (see \`pnpm workers:keys list\`)`);
    return 1;
  }
  console.log(`revoked key ${arg} "${String(row.name)}"`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error((err as Error).message);
    process.exit(1);
  },
);
