/**
 * A bundle's identity: the sha256 of its manifest in a canonical JSON form (keys sorted), so it does not
 * depend on how the file was formatted or where it was read from. The manifest lists every unit's sha256,
 * so two versions of one model (new weights, another dtype, another adapter) always differ.
 */
import { createHash } from 'node:crypto';
import type { Manifest } from './manifest';

/** Hex digits of the digest that go into NATS subjects: 48 bits, collision-free in practice for versions of one model. */
export const BUNDLE_HASH_CHARS = 12;

export function manifestSha256(manifest: Manifest): string {
  return createHash('sha256').update(canonicalJson(manifest)).digest('hex');
}

export function bundleHash(manifest: Manifest): string {
  return manifestSha256(manifest).slice(0, BUNDLE_HASH_CHARS);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
