/**
 * Loads bundle units into onnxruntime sessions, checking each unit file's size and sha256 against the
 * manifest first so a truncated or swapped file fails with its name instead of computing garbage.
 */
import { join, resolve } from 'node:path';
import { verifyUnit } from '@unimoe/shared/bundle/load';
import type { Manifest, UnitSpec } from '@unimoe/shared/bundle/manifest';
import { loadUnitSession, type UnitSession, type UnitSessionOptions } from '@unimoe/shared/runtime/ort-unit';

export function unitSpec(manifest: Manifest, name: string): UnitSpec {
  const spec = manifest.units.find((u) => u.name === name);
  if (!spec) throw new Error(`bundle "${manifest.name}" has no unit ${name}`);
  return spec;
}

export async function loadVerifiedUnit(bundleDir: string, manifest: Manifest, name: string, opts?: UnitSessionOptions): Promise<UnitSession> {
  const spec = unitSpec(manifest, name);
  await verifyUnit(bundleDir, spec);
  const file = join(resolve(bundleDir), spec.file);
  try {
    return await loadUnitSession(file, opts);
  } catch (err) {
    throw new Error(`unit ${name}: onnxruntime cannot load ${file}: ${(err as Error).message}`);
  }
}
