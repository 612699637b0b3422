import { defineConfig } from 'vitest/config';

// The docker driver against a private dockerd (needs root and gcc): `pnpm test:docker-driver`.
export default defineConfig({
  test: {
    include: ['tests/autoscale/docker/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
