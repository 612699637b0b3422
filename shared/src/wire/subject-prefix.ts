/**
 * The bundle identity every subject starts with, apart from ./subjects because that module hashes
 * manifests (node:crypto): runtimes without Node (the Workers edge) build subjects from a known hash.
 */

/** Which bundle a subject belongs to: the manifest's name and its hash (`bundleHash`). */
export interface WireModel {
  name: string;
  hash: string;
}

/** A model name as one subject token: NATS subjects split on '.', and ' ', '*', '>' are reserved. */
export function subjectToken(name: string): string {
  const token = name.replace(/[^A-Za-z0-9_-]/g, '_');
  if (!token) throw new Error('a model name is needed to build NATS subjects');
  return token;
}

/** `unimoe.<model>.<hash>`: the prefix of every subject of one bundle (also what NATS permissions match). */
export function bundleSubjectPrefix(model: WireModel): string {
  if (!/^[0-9a-f]+$/.test(model.hash)) throw new Error(`bundle hash ${JSON.stringify(model.hash)} must be lowercase hex`);
  return `unimoe.${subjectToken(model.name)}.${model.hash}`;
}
