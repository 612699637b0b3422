/**
 * Token sampling: greedy, or temperature + top-k + top-p (nucleus) over one logits row, drawing from a
 * per-sequence seeded PRNG so that the same seed and prompt give the same tokens whatever else is batched.
 */

export interface SamplingOptions {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 disables. */
  topP: number;
  /** Keep the k most likely tokens; 0 disables. */
  topK: number;
}

/**
 * xoshiro128** (Blackman & Vigna), seeded through splitmix64. Written here rather than taken from a
 * library because it is 20 lines, has no runtime-specific dependency (the edge also builds for
 * Workers), and its exact stream is part of the reproducibility contract, so it must never change
 * under us with a dependency bump.
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** Any safe integer (negative too): it is reduced to 64 bits and expanded by splitmix64. */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new Error(`sampling seed must be a safe integer, got ${seed}`);
    let x = BigInt.asUintN(64, BigInt(seed));
    const words: number[] = [];
    for (let i = 0; i < 2; i++) {
      x = BigInt.asUintN(64, x + 0x9e3779b97f4a7c15n);
      let z = x;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      z = z ^ (z >> 31n);
      words.push(Number(z & 0xffffffffn), Number(z >> 32n));
    }
    [this.s0, this.s1, this.s2, this.s3] = words;
    // splitmix64 never yields four zero words for two consecutive outputs, so the state is valid.
  }

  /** A fresh generator from a random seed (for requests that give none). */
  static random(): Rng {
    const buf = new Uint32Array(2);
    crypto.getRandomValues(buf);
    return new Rng((buf[0] & 0x1fffff) * 2 ** 32 + buf[1]);
  }

  /** Next 32-bit unsigned output. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

export function validateSamplingOptions(o: SamplingOptions): void {
  if (!Number.isFinite(o.temperature) || o.temperature < 0) throw new Error(`temperature must be a finite number >= 0, got ${o.temperature}`);
  if (!(o.topP > 0 && o.topP <= 1)) throw new Error(`topP must be in (0, 1], got ${o.topP}`);
  if (!Number.isInteger(o.topK) || o.topK < 0) throw new Error(`topK must be an integer >= 0, got ${o.topK}`);
}

/** Index of the largest logit, lowest index on ties. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (Number.isNaN(v)) throw new Error(`logit ${i} is NaN`);
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  if (bestValue === -Infinity) throw new Error('every logit is -Infinity');
  return best;
}

/**
 * The candidate distribution `sample` draws from: kept token ids and their renormalised probabilities.
 * With top-k or top-p active the ids are sorted by probability (descending, lower id first on ties);
 * with neither, every id is kept in id order (the order only affects which u maps to which id).
 * Exposed so tests can check the kept set.
 */
export function candidateDistribution(logits: Float32Array, o: SamplingOptions): { ids: Int32Array; probs: Float64Array } {
  validateSamplingOptions(o);
  if (o.temperature === 0) return { ids: Int32Array.of(argmax(logits)), probs: Float64Array.of(1) };
  const max = logits[argmax(logits)];
  const n = logits.length;
  const weight = new Float64Array(n);
  for (let i = 0; i < n; i++) weight[i] = Math.exp((logits[i] - max) / o.temperature);

  let candidates = topKIds(weight, o.topK > 0 ? Math.min(o.topK, n) : n);
  let total = 0;
  for (const id of candidates) total += weight[id];
  if (o.topP < 1) {
    // Tokens below (1-p)/m of the mass can never enter the nucleus: together they hold less than 1-p,
    // so the heavier ones already reach p. Dropping them first keeps the sort short for 32k vocabularies.
    const floor = ((1 - o.topP) * total) / candidates.length;
    candidates = candidates.filter((id) => weight[id] >= floor * (1 - 1e-12));
  }
  if (o.topP < 1 || o.topK > 0) candidates.sort((a, b) => weight[b] - weight[a] || a - b);
  let keep = candidates.length;
  let kept = total;
  if (o.topP < 1) {
    // Nucleus: the smallest prefix (by probability) whose mass reaches topP.
    let mass = 0;
    for (let i = 0; i < candidates.length; i++) {
      mass += weight[candidates[i]];
      if (mass >= o.topP * total) {
        keep = i + 1;
        break;
      }
    }
    kept = mass;
  }
  const ids = Int32Array.from(candidates.slice(0, keep));
  const probs = new Float64Array(keep);
  for (let i = 0; i < keep; i++) probs[i] = weight[ids[i]] / kept;
  return { ids, probs };
}

/** The k heaviest ids (lowest ids win ties at the cut), in id order. */
function topKIds(weight: Float64Array, k: number): number[] {
  const ids: number[] = [];
  if (k >= weight.length) {
    for (let i = 0; i < weight.length; i++) ids.push(i);
    return ids;
  }
  const sorted = Float64Array.from(weight).sort(); // native numeric sort, ascending
  const cut = sorted[weight.length - k];
  let above = 0;
  for (let i = 0; i < weight.length; i++) if (weight[i] > cut) above++;
  let tiesLeft = k - above;
  for (let i = 0; i < weight.length; i++) {
    if (weight[i] > cut) ids.push(i);
    else if (weight[i] === cut && tiesLeft > 0) {
      ids.push(i);
      tiesLeft--;
    }
  }
  return ids;
}

/** Samples one token id from a logits row. Greedy draws nothing from `rng`; otherwise exactly one float. */
export function sample(logits: Float32Array, o: SamplingOptions, rng: Rng): number {
  if (o.temperature === 0) {
    validateSamplingOptions(o);
    return argmax(logits);
  }
  const { ids, probs } = candidateDistribution(logits, o);
  const u = rng.nextFloat();
  let cumulative = 0;
  for (let i = 0; i < ids.length; i++) {
    cumulative += probs[i];
    if (u < cumulative) return ids[i];
  }
  return ids[ids.length - 1]; // u fell in the rounding gap just below 1
}
