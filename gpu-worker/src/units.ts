/** Which units a worker hosts: its experts on its layers, checked against the manifest. */
import { unitName, type Manifest, type UnitSpec } from '@unimoe/shared/bundle/manifest';

export function selectExpertUnits(manifest: Manifest, experts: readonly number[], layers?: readonly number[]): UnitSpec[] {
  const { config } = manifest;
  if (experts.length === 0) throw new Error('no experts given: a worker must host at least one');
  for (const e of experts) {
    if (e >= config.experts) throw new Error(`expert ${e} does not exist: model ${manifest.name} has ${config.experts} experts (0-${config.experts - 1})`);
  }
  for (const l of layers ?? []) {
    if (l >= config.layers) throw new Error(`layer ${l} does not exist: model ${manifest.name} has ${config.layers} layers (0-${config.layers - 1})`);
  }
  const byName = new Map(manifest.units.map((u) => [u.name, u]));
  const units: UnitSpec[] = [];
  for (const l of layers ?? Array.from({ length: config.layers }, (_, i) => i)) {
    for (const e of experts) {
      const name = unitName.expert(l, e);
      const unit = byName.get(name);
      if (!unit) throw new Error(`the bundle's manifest has no unit ${name}`);
      units.push(unit);
    }
  }
  return units;
}
