/**
 * JPEG and WebP decoders: libjpeg-turbo (MozJPEG) and libwebp compiled to WASM by @jsquash. They
 * are the same C libraries PIL links, so decoded pixels match the reference bit for bit, and they
 * run unchanged on Node and Cloudflare Workers. Only how the .wasm bytes are obtained differs:
 * Node reads them from node_modules; a Workers entry point imports the modules and passes them to
 * `provideImageCodecModules` at startup.
 */
import decodeJpeg, { init as initJpeg } from '@jsquash/jpeg/decode';
import decodeWebp, { init as initWebp } from '@jsquash/webp/decode';

export interface ImageCodecModules {
  jpeg: WebAssembly.Module;
  webp: WebAssembly.Module;
}

export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8ClampedArray;
}

// The published typings omit the (module) overload that the implementation accepts.
type InitWithModule = (module: WebAssembly.Module) => Promise<void>;

let ready: Promise<void> | null = null;

async function initCodecs(modules: ImageCodecModules): Promise<void> {
  await (initJpeg as unknown as InitWithModule)(modules.jpeg);
  await (initWebp as unknown as InitWithModule)(modules.webp);
}

export function provideImageCodecModules(modules: ImageCodecModules): void {
  ready = initCodecs(modules);
}

async function loadModulesFromNodeModules(): Promise<ImageCodecModules> {
  const { createRequire } = await import('node:module');
  const { readFile } = await import('node:fs/promises');
  const require = createRequire(import.meta.url);
  const compile = async (specifier: string) => WebAssembly.compile(await readFile(require.resolve(specifier)));
  return {
    jpeg: await compile('@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm'),
    webp: await compile('@jsquash/webp/codec/dec/webp_dec.wasm'),
  };
}

async function ensureCodecs(): Promise<void> {
  if (ready === null) {
    const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';
    if (!isNode) {
      throw new Error('JPEG/WebP decoders are not initialised: call provideImageCodecModules() at startup');
    }
    ready = loadModulesFromNodeModules().then(initCodecs);
  }
  await ready;
}

/** Copies into a fresh ArrayBuffer: the decoders take an ArrayBuffer, not a view. */
function ownBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.slice().buffer;
}

export async function decodeJpegRgba(bytes: Uint8Array): Promise<RgbaImage> {
  await ensureCodecs();
  return decodeJpeg(ownBuffer(bytes));
}

export async function decodeWebpRgba(bytes: Uint8Array): Promise<RgbaImage> {
  await ensureCodecs();
  return decodeWebp(ownBuffer(bytes));
}
