/**
 * Running wrangler for this Worker from scripts and tests: always offline and without telemetry, with
 * its local state (the D1 database) in one folder, and the D1 migrations applied before anything reads it.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** This folder: wrangler.toml and the Worker's config live here. */
export const WORKER_DIR = dirname(fileURLToPath(import.meta.url));
/** wrangler's CLI entry, run with this Node (no npx: a test must be able to stop exactly what it started). */
export const WRANGLER_CLI = join(dirname(createRequire(import.meta.url).resolve('wrangler/package.json')), 'bin', 'wrangler.js');
/** The D1 binding's name in wrangler.toml. */
export const D1_BINDING = 'DB';

/** Local state (D1's SQLite files): WORKERS_STATE_DIR, else infra/workers/.wrangler/state. */
export function localStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.WORKERS_STATE_DIR || join(WORKER_DIR, '.wrangler', 'state'));
}

/**
 * Local runs stay offline: no telemetry, no fetch of the `Request.cf` placeholder from cloudflare.com, and
 * no banner (printing it asks the npm registry for a newer wrangler).
 */
export function offlineEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_HIDE_BANNER: 'true' };
}

/** Runs a wrangler command to completion; rejects with its output when it fails. */
export function runWrangler(args: string[], opts: SpawnOptions = {}): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [WRANGLER_CLI, ...args], { cwd: WORKER_DIR, env: offlineEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolvePromise(out);
      else reject(new Error(`wrangler ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${out}`));
    });
  });
}

/** Applies the pending D1 migrations (edge/drizzle/sqlite) to the local database in `stateDir`. */
export async function migrateLocalD1(stateDir: string): Promise<void> {
  await runWrangler(['d1', 'migrations', 'apply', D1_BINDING, '--local', '--persist-to', stateDir]);
}

/** Which D1 database: the local one in a state folder, or the deployed one (`--remote`, needs a Cloudflare login). */
export type D1Target = { stateDir: string } | 'remote';

/** Runs SQL on the local D1 database; returns the rows of its (last) statement. */
export function queryLocalD1(stateDir: string, sql: string): Promise<Record<string, unknown>[]> {
  return queryD1({ stateDir }, sql);
}

export async function queryD1(target: D1Target, sql: string): Promise<Record<string, unknown>[]> {
  const where = target === 'remote' ? ['--remote'] : ['--local', '--persist-to', target.stateDir];
  const out = await runWrangler(['d1', 'execute', D1_BINDING, ...where, '--json', '--command', sql]);
  const results = JSON.parse(out.slice(out.indexOf('['))) as { results: Record<string, unknown>[] }[];
  return results[results.length - 1]?.results ?? [];
}
