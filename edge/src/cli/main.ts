/**
 * `unimoe <command>`: the one CLI (run it as `pnpm unimoe <command>` from the repo root).
 * Each command lives in its own module, loaded only when used.
 */
type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

const commands: Record<string, Command> = {
  demo: { summary: 'make a tiny model and serve it in-process (the embedded default)', load: () => import('./commands/demo') },
  'make-tiny': { summary: 'write a small random checkpoint in a real on-disk layout', load: () => import('./commands/make-tiny') },
  convert: { summary: 'convert a checkpoint directory into a model bundle', load: () => import('./commands/convert') },
  tokenize: { summary: "print a text's token ids (BOS included)", load: () => import('./commands/tokenize') },
  logits: { summary: "print the last position's logits for --ids", load: () => import('./commands/logits') },
  generate: { summary: 'generate tokens from --ids or --prompt', load: () => import('./commands/generate') },
  worker: { summary: 'run one replica of an expert pool', load: () => import('./commands/worker') },
  serve: { summary: 'serve the OpenAI-style edge API', load: () => import('./commands/serve') },
  engine: { summary: 'run one engine of the engine tier (dense units behind NATS, for serve --engine-nats and the Worker)', load: () => import('./commands/engine') },
  upload: { summary: 'upload a bundle to an S3-compatible model store (resumable, sha256-verified)', load: () => import('./commands/upload') },
  keys: { summary: 'create, list and revoke API keys', load: () => import('./commands/keys') },
  preprocess: { summary: 'write model-ready features of an image, speech (log-mel), audio (fbank) or video file', load: () => import('./commands/preprocess') },
  'nats-auth': { summary: 'write a nats-server config with per-role permissions and nkeys for a bundle', load: () => import('./commands/nats-auth') },
  cluster: { summary: 'run nats-server, two expert pools and the edge locally', load: () => import('./commands/cluster') },
  autoscale: { summary: 'scale expert pools with their load (process or docker driver)', load: () => import('./commands/autoscale') },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return ['usage: unimoe <command> [options]', '', ...Object.entries(commands).map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`)].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    console.error(`unimoe: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return (await command.load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // A command that returned is done (serve and worker return after their bounded shutdown): a handle
    // left open somewhere (a socket, a client's reconnect timer) must not keep the process alive.
    setTimeout(() => process.exit(), 1000).unref();
  },
  (err: unknown) => {
    // Users get the message (it names the file/flag and the problem); UNIMOE_DEBUG=1 adds the stack.
    if (process.env.UNIMOE_DEBUG) console.error(err);
    else console.error(`unimoe: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
