/**
 * The choices of one generate() request (n >= 1): each is its own Sequence once the prompt is
 * prefilled; the request resolves when every choice has ended, or fails with the first error.
 */
import type { ChoiceResult, GenerationResult, TokenLogprob } from './types';

export class ChoiceGroup {
  private readonly results: (ChoiceResult | undefined)[];
  private remaining: number;
  /** A choice failed: the request is rejected and its siblings stop at the next step. */
  failed = false;
  promptLogprobs?: (TokenLogprob | null)[];

  constructor(
    readonly n: number,
    private readonly promptTokens: number,
    private readonly resolve: (r: GenerationResult) => void,
    private readonly reject: (err: Error) => void,
    wantsPromptLogprobs: boolean,
  ) {
    this.results = new Array(n).fill(undefined);
    this.remaining = n;
    if (wantsPromptLogprobs) this.promptLogprobs = new Array(promptTokens).fill(null);
  }

  finishChoice(choice: number, result: ChoiceResult): void {
    if (this.failed || this.results[choice]) return;
    this.results[choice] = result;
    if (--this.remaining > 0) return;
    const choices = this.results as ChoiceResult[];
    this.resolve({ ...choices[0]!, promptTokens: this.promptTokens, choices, ...(this.promptLogprobs ? { promptLogprobs: this.promptLogprobs } : {}) });
  }

  fail(err: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.reject(err);
  }
}
