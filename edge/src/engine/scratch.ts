/**
 * Grow-only float32 work buffers reused across steps, so the step loop allocates nothing per token
 * for its large intermediates. A view is only valid until the next `f32` call for the same name.
 */
export class Scratch {
  private readonly buffers = new Map<string, Float32Array>();

  f32(name: string, length: number): Float32Array {
    let buf = this.buffers.get(name);
    if (!buf || buf.length < length) {
      buf = new Float32Array(Math.max(length, Math.ceil((buf?.length ?? 0) * 1.5)));
      this.buffers.set(name, buf);
    }
    return buf.subarray(0, length);
  }
}
