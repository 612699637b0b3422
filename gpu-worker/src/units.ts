/** Which units a worker hosts: its experts on its layers and its modality encoders, checked against the manifest. */
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

/** Encoder kinds a worker can host and the converter flag that adds each (CLIP, Whisper, BEATs). */
export const ENCODERS = { vision: { flag: '--vision-tower' }, speech: { flag: '--speech-tower' }, audio: { flag: '--audio-tower' } } as const;
export type EncoderName = keyof typeof ENCODERS;

/** `vision,speech,audio` -> ['audio', 'speech', 'vision'] (sorted, unique). */
export function parseEncoderList(text: string, what = '--encoders'): EncoderName[] {
  const names = new Set<EncoderName>();
  for (const part of text.split(',').map((p) => p.trim())) {
    if (!Object.hasOwn(ENCODERS, part)) throw new Error(`${what}: ${JSON.stringify(part)} is not an encoder (expected a list of vision, speech, audio)`);
    names.add(part as EncoderName);
  }
  return [...names].sort();
}

/**
 * The encoder units (found by kind: bundles from before the BEATs path name their Whisper unit
 * `audio.encoder`), each with numeric item dims (the leading axis is the only dynamic one).
 */
export function selectEncoderUnits(manifest: Manifest, encoders: readonly EncoderName[]): UnitSpec[] {
  return encoders.map((name) => {
    const { flag } = ENCODERS[name];
    const spec = manifest.units.find((u) => u.kind === name);
    if (!spec) throw new Error(`the bundle's manifest has no ${name} encoder unit (model ${manifest.name} was converted without ${flag})`);
    const unit = spec.name;
    for (const t of [spec.inputs[0], spec.outputs[0]]) {
      if (!t || t.shape.length < 2 || t.shape.slice(1).some((d) => typeof d !== 'number')) {
        throw new Error(`unit ${unit}: the manifest shape ${t ? `[${t.shape.join(',')}]` : '(none)'} is not [N, fixed dims...]`);
      }
    }
    return spec;
  });
}
