import { BUNDLE_FORMAT, BUNDLE_VERSION, type Manifest } from '../bundle/manifest';
import { ModelStoreError } from './errors';

/**
 * Parses manifest.json text with the checks the store itself relies on (format, version, unit files
 * and hashes); deeper validation of the model config belongs to the bundle loader.
 */
export function parseManifestJson(text: string, where: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ModelStoreError(`${where}: manifest.json is not valid JSON (${(err as Error).message})`);
  }
  const m = value as Partial<Manifest> | null;
  if (!m || typeof m !== 'object') throw new ModelStoreError(`${where}: manifest.json is not a JSON object`);
  if (m.format !== BUNDLE_FORMAT) throw new ModelStoreError(`${where}: manifest.json format is ${JSON.stringify(m.format)}, expected "${BUNDLE_FORMAT}"`);
  if (m.version !== BUNDLE_VERSION) throw new ModelStoreError(`${where}: manifest.json version ${JSON.stringify(m.version)} is not supported (expected ${BUNDLE_VERSION})`);
  if (typeof m.name !== 'string' || !m.name) throw new ModelStoreError(`${where}: manifest.json has no model name`);
  if (!m.config || typeof m.config.hidden !== 'number') throw new ModelStoreError(`${where}: manifest.json has no config.hidden`);
  if (!Array.isArray(m.units)) throw new ModelStoreError(`${where}: manifest.json has no units array`);
  for (const [i, u] of m.units.entries()) {
    if (!u || typeof u.name !== 'string' || typeof u.file !== 'string' || !/^[0-9a-f]{64}$/.test(u.sha256 ?? '')) {
      throw new ModelStoreError(`${where}: manifest.json units[${i}] needs a name, a file and a hex sha256`);
    }
    if (u.file.startsWith('/') || u.file.split(/[\\/]/).includes('..')) {
      throw new ModelStoreError(`${where}: manifest.json unit ${u.name} file ${JSON.stringify(u.file)} escapes the bundle`);
    }
  }
  return m as Manifest;
}
