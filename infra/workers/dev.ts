/**
 * `pnpm workers:dev`: the Worker on a local workerd (`wrangler dev`, offline), its D1 database migrated
 * first. Environment: NATS_WS_URL (default ws://127.0.0.1:8080), the NATS websocket listener the engines
 * share; MODEL, the model the engines serve; PORT (default 8787) where it listens. NATS credentials:
 * infra/workers/.dev.vars (see .dev.vars.example).
 */
import { spawn } from 'node:child_process';
import { localStateDir, migrateLocalD1, offlineEnv, WORKER_DIR, WRANGLER_CLI } from './wrangler';

const state = localStateDir();
await migrateLocalD1(state);
const args = ['dev', '--ip', '127.0.0.1', '--port', process.env.PORT || '8787', '--persist-to', state, '--show-interactive-dev-session=false'];
for (const name of ['NATS_WS_URL', 'MODEL']) if (process.env[name]) args.push('--var', `${name}:${process.env[name]}`);
const child = spawn(process.execPath, [WRANGLER_CLI, ...args], { cwd: WORKER_DIR, env: offlineEnv(), stdio: 'inherit' });
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
