import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Files made by tests/fixtures/media/make_media_fixtures.py. */
export const MEDIA_FIXTURES = fileURLToPath(new URL('../../../tests/fixtures/media/', import.meta.url));

export function fixture(name: string): Uint8Array {
  return new Uint8Array(readFileSync(MEDIA_FIXTURES + name));
}

export function fixtureJson<T>(name: string): T {
  return JSON.parse(readFileSync(MEDIA_FIXTURES + name, 'utf8')) as T;
}

export function fixtureFloat32(name: string): Float32Array {
  const bytes = fixture(name);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float32Array.from({ length: bytes.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
}
