/**
 * Loads one bundle unit (an ONNX file) into an onnxruntime-node session and runs it.
 * Node-only: the edge's Workers build uses a different runtime behind the same `UnitSession` shape.
 *
 * Execution provider: CPU unless the user opts in with UNIMOE_EXECUTION_PROVIDER=cuda (requires
 * onnxruntime-node installed with its CUDA files, see README "GPU (CUDA)"); a failed CUDA start falls
 * back to CPU and says so once.
 */
import * as ort from 'onnxruntime-node';
import { log } from '../log';
import { availableParallelism } from 'node:os';
import type { Tensor, TensorData } from '../tensor';

export interface UnitSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly executionProvider: 'cpu' | 'cuda';
  run(feeds: Record<string, Tensor>): Promise<Record<string, Tensor<Float32Array>>>;
  release(): Promise<void>;
}

export interface UnitSessionOptions {
  /** Threads for one operator; defaults to UNIMOE_THREADS or the machine's cores. */
  threads?: number;
  executionProvider?: 'cpu' | 'cuda';
}

let warnedCudaFallback = false;

function defaultThreads(): number {
  return Number(process.env.UNIMOE_THREADS) || availableParallelism();
}

export function defaultExecutionProvider(): 'cpu' | 'cuda' {
  return process.env.UNIMOE_EXECUTION_PROVIDER === 'cuda' ? 'cuda' : 'cpu';
}

/** The options every unit session is created with (exported for benchmarks that profile one unit). */
export function unitSessionOptions(threads = defaultThreads(), ep: 'cpu' | 'cuda' = 'cpu'): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: [ep],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    // Many sessions live in one process (one per unit); spinning idle threads would burn every core.
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

export async function loadUnitSession(model: string | Uint8Array, opts: UnitSessionOptions = {}): Promise<UnitSession> {
  const threads = opts.threads ?? defaultThreads();
  let ep = opts.executionProvider ?? defaultExecutionProvider();
  let session: ort.InferenceSession;
  try {
    session = await create(model, unitSessionOptions(threads, ep));
  } catch (err) {
    if (ep !== 'cuda') throw err;
    if (!warnedCudaFallback) {
      warnedCudaFallback = true;
      log.warn(`CUDA execution provider unavailable (${(err as Error).message.split('\n')[0]}); using CPU`);
    }
    ep = 'cpu';
    session = await create(model, unitSessionOptions(threads, ep));
  }
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    executionProvider: ep,
    async run(feeds) {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = toOrt(t);
      const out = await session.run(ortFeeds);
      const result: Record<string, Tensor<Float32Array>> = {};
      for (const [name, t] of Object.entries(out)) {
        if (t.type !== 'float32') throw new Error(`unit output ${name} has type ${t.type}, expected float32`);
        result[name] = { data: t.data as Float32Array, dims: [...t.dims] };
      }
      return result;
    },
    release: () => session.release(),
  };
}

function create(model: string | Uint8Array, options: ort.InferenceSession.SessionOptions) {
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options);
}

function toOrt(t: Tensor<TensorData>): ort.Tensor {
  return t.data instanceof BigInt64Array ? new ort.Tensor('int64', t.data, t.dims) : new ort.Tensor('float32', t.data, t.dims);
}
