/** Any problem reading a bundle from a model store; the message names the location and the problem. */
export class ModelStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelStoreError';
  }
}
