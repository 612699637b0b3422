/**
 * Subjects of the engine tier (docs/workers.md, "Engine tier"). Node-free like ./subject-prefix, so the
 * Workers edge builds them too; ./subjects re-exports them for the Node side.
 *  - `unimoe.<model>.discover`: any engine serving a bundle of that model answers with its manifest and hash
 *    (the one subject without the hash: a client that holds no bundle does not know it yet).
 *  - `<bundle>.engine.generate|grammar|file`: served by the queue group of all engines of the bundle.
 *  - `<bundle>.engine.replica.<id>.cancel|stats`: one engine's own subjects.
 */
import { bundleSubjectPrefix, subjectToken, type WireModel } from './subject-prefix';

/** The queue group every engine of a bundle joins (one group for all its queue subjects). */
export const ENGINE_QUEUE = 'unimoe-engines';

export function engineDiscoverSubject(modelName: string): string {
  return `unimoe.${subjectToken(modelName)}.discover`;
}

/** `<bundle>.engine.<what>`: a generation, a response_format compile check, a bundle file's bytes. */
export function engineSubject(model: WireModel, what: 'generate' | 'grammar' | 'file'): string {
  return `${bundleSubjectPrefix(model)}.engine.${what}`;
}

/** `<bundle>.engine.replica.<id>.<what>`: cancel (or stop one choice of) a request it accepted; its load. */
export function engineReplicaSubject(model: WireModel, engineId: string, what: 'cancel' | 'stats'): string {
  return `${bundleSubjectPrefix(model)}.engine.replica.${subjectToken(engineId)}.${what}`;
}
