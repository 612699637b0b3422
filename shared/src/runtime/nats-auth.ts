/**
 * NATS credentials and TLS for every role (edge, worker of a pool, autoscaler), from the environment and
 * CLI flags, turned into nats.js connection options. One of: a `.creds` file (JWT + nkey seed, for
 * operator/account setups), an nkey seed (what `unimoe nats-auth` generates), user + password, or a
 * token; plus TLS with a CA and, for mutual TLS, a client certificate and key.
 */
import { readFileSync } from 'node:fs';
import { credsAuthenticator, nkeyAuthenticator, tokenAuthenticator, usernamePasswordAuthenticator, type ConnectionOptions } from 'nats';

export interface NatsSecurity {
  /** Path of a `.creds` file (NATS_CREDS). */
  creds?: string;
  /** Path of a file holding an nkey user seed (`SU...`), or the seed itself (NATS_NKEY_SEED). */
  nkeySeed?: string;
  user?: string;
  password?: string;
  token?: string;
  /** PEM paths: the CA that signed the server's certificate, and this client's certificate and key. */
  tls?: { ca?: string; cert?: string; key?: string };
}

/** Who connects: decides the private inbox prefix that the generated permissions allow this role to subscribe to. */
export type NatsRole = { kind: 'edge' } | { kind: 'engine' } | { kind: 'worker'; pool: string } | { kind: 'autoscaler' };

/** `_INBOX.edge`, `_INBOX.engine`, `_INBOX.worker.<pool>`, `_INBOX.autoscaler`: replies to a role's requests land under its own prefix. */
export function roleInboxPrefix(role: NatsRole): string {
  return role.kind === 'worker' ? `_INBOX.worker.${role.pool.replace(/[^A-Za-z0-9_-]/g, '_')}` : `_INBOX.${role.kind}`;
}

export const NATS_SECURITY_ENV = ['NATS_CREDS', 'NATS_NKEY_SEED', 'NATS_USER', 'NATS_PASSWORD', 'NATS_TOKEN', 'NATS_TLS_CA', 'NATS_TLS_CERT', 'NATS_TLS_KEY'] as const;

export function natsSecurityFromEnv(env: NodeJS.ProcessEnv = process.env): NatsSecurity {
  const v = (name: (typeof NATS_SECURITY_ENV)[number]) => env[name] || undefined;
  const tls = { ca: v('NATS_TLS_CA'), cert: v('NATS_TLS_CERT'), key: v('NATS_TLS_KEY') };
  return dropUndefined({
    creds: v('NATS_CREDS'),
    nkeySeed: v('NATS_NKEY_SEED'),
    user: v('NATS_USER'),
    password: v('NATS_PASSWORD'),
    token: v('NATS_TOKEN'),
    tls: tls.ca || tls.cert || tls.key ? dropUndefined(tls) : undefined,
  });
}

/** CLI flags of `serve`/`worker`/`cluster` (file paths only: secrets do not belong on a command line). */
export const NATS_SECURITY_FLAGS = {
  'nats-creds': { type: 'string' },
  'nats-nkey-seed': { type: 'string' },
  'nats-tls-ca': { type: 'string' },
  'nats-tls-cert': { type: 'string' },
  'nats-tls-key': { type: 'string' },
} as const;

/** The environment's settings with any of NATS_SECURITY_FLAGS given on the command line taking precedence. */
export function natsSecurityFromFlags(values: Partial<Record<keyof typeof NATS_SECURITY_FLAGS, string>>, env: NodeJS.ProcessEnv = process.env): NatsSecurity {
  const base = natsSecurityFromEnv(env);
  const tls = dropUndefined({ ...base.tls, ca: values['nats-tls-ca'] ?? base.tls?.ca, cert: values['nats-tls-cert'] ?? base.tls?.cert, key: values['nats-tls-key'] ?? base.tls?.key });
  return dropUndefined({
    ...base,
    creds: values['nats-creds'] ?? base.creds,
    nkeySeed: values['nats-nkey-seed'] ?? base.nkeySeed,
    tls: Object.keys(tls).length > 0 ? tls : undefined,
  });
}

/** nats.js options for `security`; every file is read now, and an unreadable or malformed one is named. */
export function natsAuthOptions(security: NatsSecurity): Partial<ConnectionOptions> {
  const given = (['creds', 'nkeySeed', 'user', 'token'] as const).filter((k) => security[k]);
  if (given.length > 1) throw new Error(`NATS credentials: give one of creds, nkey seed, user/password or token, not ${given.join(' and ')}`);
  if (security.password && !security.user) throw new Error('NATS credentials: NATS_PASSWORD needs NATS_USER');
  const options: Partial<ConnectionOptions> = {};
  if (security.creds) options.authenticator = credsAuthenticator(new TextEncoder().encode(readPem(security.creds, 'NATS creds file')));
  else if (security.nkeySeed) options.authenticator = nkeyAuthenticator(readSeed(security.nkeySeed));
  else if (security.user) options.authenticator = usernamePasswordAuthenticator(security.user, security.password ?? '');
  else if (security.token) options.authenticator = tokenAuthenticator(security.token);
  const { tls } = security;
  if (tls) {
    if (Boolean(tls.cert) !== Boolean(tls.key)) throw new Error('NATS TLS: a client certificate needs its key and a key its certificate (NATS_TLS_CERT and NATS_TLS_KEY)');
    // Contents, not paths: a missing file is then reported here with its name, not at the first reconnect.
    options.tls = dropUndefined({
      ca: tls.ca && readPem(tls.ca, 'NATS TLS CA'),
      cert: tls.cert && readPem(tls.cert, 'NATS TLS client certificate'),
      key: tls.key && readPem(tls.key, 'NATS TLS client key'),
    });
  }
  return options;
}

function readSeed(value: string): Uint8Array {
  const text = /^S[A-Z2-7]{50,}$/.test(value.trim()) ? value.trim() : readPem(value, 'NATS nkey seed file').trim();
  if (!/^SU[A-Z2-7]+$/.test(text)) throw new Error(`NATS nkey seed ${value.startsWith('S') ? '(given inline)' : value}: not a user nkey seed (expected one line starting with SU)`);
  return new TextEncoder().encode(text);
}

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${what} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== '')) as T;
}
