/** `unimoe keys create NAME | list | revoke ID`: API keys in the database DATABASE_URL names. */
import { openStore } from '../../db/open';
import type { ApiKeyRecord } from '../../db/store';
import { CliError, parseCommand } from '../args';

const USAGE = 'unimoe keys create NAME | keys list [--json] | keys revoke ID   (database: DATABASE_URL or --database-url)';

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand(argv, { 'database-url': { type: 'string' }, json: { type: 'boolean' } }, USAGE);
  const [action, arg, ...extra] = positionals;
  if (extra.length > 0) throw new CliError(`unexpected arguments: ${extra.join(' ')}\nusage: ${USAGE}`);
  if (action === 'create' && (!arg || !arg.trim())) throw new CliError(`keys create needs a NAME\nusage: ${USAGE}`);
  if (action === 'revoke' && !/^\d+$/.test(arg ?? '')) throw new CliError(`keys revoke needs a numeric ID (see \`unimoe keys list\`), got ${arg === undefined ? 'nothing' : `"${arg}"`}`);
  if (action !== 'create' && action !== 'list' && action !== 'revoke') throw new CliError(`unknown keys action ${action === undefined ? '(none)' : `"${action}"`}\nusage: ${USAGE}`);
  if (action === 'list' && arg !== undefined) throw new CliError(`keys list takes no arguments\nusage: ${USAGE}`);

  const store = await openStore(values['database-url']);
  try {
    if (action === 'create') {
      const { key, record } = await store.createKey(arg!.trim());
      console.log(`created key ${record.id} "${record.name}" (${record.prefix}...). It is shown only this once; store it now:`);
      console.log(key);
      return 0;
    }
    if (action === 'list') {
      const keys = await store.listKeys();
      if (values.json) console.log(JSON.stringify(keys));
      else console.log(formatTable(keys));
      return 0;
    }
    const id = Number(arg);
    const before = (await store.listKeys()).find((k) => k.id === id);
    if (!before) throw new CliError(`no API key has id ${id} (see \`unimoe keys list\`)`);
    const after = await store.revokeKey(id);
    console.log(before.revokedAt ? `key ${id} "${before.name}" was already revoked at ${before.revokedAt.toISOString()}` : `revoked key ${id} "${after!.name}"`);
    return 0;
  } finally {
    await store.close();
  }
}

function formatTable(keys: ApiKeyRecord[]): string {
  const rows = [['ID', 'NAME', 'PREFIX', 'CREATED', 'REVOKED'], ...keys.map((k) => [String(k.id), k.name, k.prefix, k.createdAt.toISOString(), k.revokedAt?.toISOString() ?? '-'])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}
