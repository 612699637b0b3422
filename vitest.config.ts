import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{edge,gpu-worker,shared,infra,tests}/**/*.test.ts'],
    exclude: ['**/node_modules/**', 'tests/chaos/**'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
