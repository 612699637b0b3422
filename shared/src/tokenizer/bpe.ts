// SentencePiece's BPE segmentation (bpe::Model::SampleEncode without dropout): start from characters
// (user-defined symbols stay whole and frozen), repeatedly merge the adjacent pair whose merged piece
// is in the vocabulary with the highest score, leftmost first on ties, then split merged pieces of
// type UNUSED back into their parts. Stale queue entries are detected by length, as the original does.

export interface BpeVocabulary {
  /** Pieces that may result from a merge (NORMAL, USER_DEFINED, UNUSED) -> id. */
  mergeable: ReadonlyMap<string, number>;
  scores: ArrayLike<number>;
  isUnused(id: number): boolean;
  /** Longest user-defined symbol starting at text[pos], or null. */
  matchUserDefined(text: string, pos: number): string | null;
}

interface BpeSymbol {
  piece: string;
  prev: number;
  next: number;
  frozen: boolean;
}

interface Candidate {
  left: number;
  right: number;
  score: number;
  /** Merged length when queued; a different current length means the entry is stale. */
  size: number;
}

/** Priority: higher score first, then smaller left index. */
const outranks = (a: Candidate, b: Candidate): boolean =>
  a.score > b.score || (a.score === b.score && a.left < b.left);

class CandidateQueue {
  private readonly heap: Candidate[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(item: Candidate): void {
    const heap = this.heap;
    let i = heap.length;
    heap.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!outranks(item, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = item;
  }

  pop(): Candidate {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= heap.length) break;
        const r = l + 1;
        const child = r < heap.length && outranks(heap[r]!, heap[l]!) ? r : l;
        if (!outranks(heap[child]!, last)) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}

/** Segments an already-normalized string into vocabulary pieces (or unknown single characters). */
export function bpeSegment(normalized: string, vocab: BpeVocabulary): string[] {
  const symbols: BpeSymbol[] = [];
  for (let pos = 0; pos < normalized.length; ) {
    const userDefined = vocab.matchUserDefined(normalized, pos);
    const codePoint = normalized.codePointAt(pos)!;
    const piece = userDefined ?? String.fromCodePoint(codePoint);
    pos += piece.length;
    const index = symbols.length;
    symbols.push({ piece, prev: index - 1, next: pos < normalized.length ? index + 1 : -1, frozen: userDefined !== null });
  }
  if (symbols.length === 0) return [];

  const queue = new CandidateQueue();
  // UNUSED pieces produced by a merge, mapped to the two pieces they were made of.
  const unmerge = new Map<string, [string, string]>();
  const consider = (left: number, right: number): void => {
    if (left < 0 || right < 0) return;
    const a = symbols[left]!;
    const b = symbols[right]!;
    if (a.frozen || b.frozen) return;
    const merged = a.piece + b.piece;
    const id = vocab.mergeable.get(merged);
    if (id === undefined) return;
    queue.push({ left, right, score: vocab.scores[id]!, size: merged.length });
    if (vocab.isUnused(id)) unmerge.set(merged, [a.piece, b.piece]);
  };

  for (let i = 1; i < symbols.length; i++) consider(i - 1, i);

  while (queue.size > 0) {
    const top = queue.pop();
    const left = symbols[top.left]!;
    const right = symbols[top.right]!;
    if (left.piece === '' || right.piece === '' || left.piece.length + right.piece.length !== top.size) continue;
    left.piece += right.piece;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next]!.prev = top.left;
    right.piece = '';
    consider(left.prev, top.left);
    consider(top.left, left.next);
  }

  const out: string[] = [];
  const resegment = (piece: string): void => {
    const id = vocab.mergeable.get(piece);
    const parts = id !== undefined && vocab.isUnused(id) ? unmerge.get(piece) : undefined;
    if (!parts) {
      out.push(piece);
      return;
    }
    resegment(parts[0]);
    resegment(parts[1]);
  };
  for (let i = 0; i !== -1; i = symbols[i]!.next) resegment(symbols[i]!.piece);
  return out;
}
