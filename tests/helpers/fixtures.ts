/** Paths to the committed fixtures. */
import { fileURLToPath } from 'node:url';

export const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
export const modelFixture = (name: 'unimoe-4e' | 'unimoe-4e-adapter' | 'unimoe-8e' | 'mixtral') => `${FIXTURES}models/${name}`;
