// The engine-tier client must run in a Worker: from its entry point, no module it loads at run time (type-only
// imports aside) imports node:* or the Node-only `nats` package; the only package it needs is @nats-io/nats-core.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { expect, it } from 'vitest';
import { REPO } from '../split/cluster';

const IMPORT = /^\s*(?:import|export)\s+(type\s+)?(?:([\s\S]*?)\s+from\s+)?'([^']+)';/gm;

/** Runtime imports of one module: `import type` and imports of types only are erased. */
function runtimeImports(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(IMPORT)) {
    const [, typeOnly, clause, spec] = m;
    if (typeOnly) continue;
    const names = clause?.match(/^\{([\s\S]*)\}$/)?.[1]?.split(',').map((s) => s.trim()).filter(Boolean);
    if (names && names.every((n) => n.startsWith('type '))) continue;
    out.push(spec!);
  }
  return out;
}

function resolveModule(from: string, spec: string): string | null {
  if (spec.startsWith('.')) return resolve(dirname(from), `${spec}.ts`);
  const workspace = /^@unimoe\/(shared|edge)\/(.+)$/.exec(spec);
  if (workspace) return join(REPO, workspace[1]!, 'src', `${workspace[2]}.ts`);
  return null;
}

/** Every module `entry` loads at run time, and the packages (and node: modules) they import. */
function loads(entry: string): { modules: Set<string>; packages: Set<string> } {
  const modules = new Set<string>();
  const packages = new Set<string>();
  const walk = (file: string) => {
    if (modules.has(file)) return;
    modules.add(file);
    for (const spec of runtimeImports(file)) {
      const next = resolveModule(file, spec);
      if (next) walk(next);
      else packages.add(`${spec} (from ${file.slice(REPO.length + 1)})`);
    }
  };
  walk(join(REPO, entry));
  return { modules, packages };
}

it('edge/src/engine-client/index.ts loads no node:* module and no package but @nats-io/nats-core', () => {
  const { modules, packages } = loads('edge/src/engine-client/index.ts');
  expect(modules.size).toBeGreaterThan(10);
  expect([...packages].map((p) => p.split(' ')[0])).toEqual(expect.arrayContaining(['@nats-io/nats-core']));
  expect([...packages].filter((p) => !p.startsWith('@nats-io/nats-core '))).toEqual([]);
});

it('the check sees Node-only imports where they are (the Node transport, the engine service)', () => {
  expect([...loads('edge/src/engine-client/node-nats-transport.ts').packages].map((p) => p.split(' ')[0])).toContain('nats');
  expect([...loads('edge/src/engine-service/service.ts').packages].map((p) => p.split(' ')[0])).toContain('node:crypto');
});
