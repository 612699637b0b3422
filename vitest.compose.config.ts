import { defineConfig } from 'vitest/config';

// `pnpm test:compose`: infra/compose.yaml on a real Docker engine (tests/compose). The first run on a machine
// builds the images (base by debootstrap, the unimoe image, the stand-ins); later runs reuse .cache/compose.
export default defineConfig({
  test: {
    include: ['tests/compose/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    testTimeout: 600_000,
    hookTimeout: 1_500_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
