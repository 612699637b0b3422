/** Contract between checkpoint readers (safetensors, torch zip) and their users (converter, reference). */

/** Element types found in checkpoints. Readers convert every one of them to float32 on read. */
export type CheckpointDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'BOOL' | 'U8' | 'I8' | 'I16';

export interface TensorInfo {
  name: string;
  dtype: CheckpointDType;
  shape: number[];
  /** The file (absolute path) the tensor's bytes live in. */
  file: string;
}

/**
 * A lazily-read set of named tensors: one file or a sharded directory.
 * Opening reads only headers / pickle metadata; `read` pulls one tensor's bytes from disk.
 */
export interface Checkpoint {
  /** Tensor names in file order. */
  names(): string[];
  has(name: string): boolean;
  /** Throws CheckpointError (naming the tensor) when absent. */
  info(name: string): TensorInfo;
  /** The tensor as contiguous row-major float32 (strides and storage offsets applied). */
  read(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

/** Any problem with a checkpoint file: the message always names the file, and the tensor when there is one. */
export class CheckpointError extends Error {
  constructor(
    message: string,
    readonly file: string,
    readonly tensor?: string,
  ) {
    super(`${file}${tensor ? ` [${tensor}]` : ''}: ${message}`);
    this.name = 'CheckpointError';
  }
}
