import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Differential tests spawn qemu-img; two workers fit the 2-core CI machine.
    maxWorkers: 2,
    globalSetup: ['test/setup-build.ts'],
    setupFiles: ['test/setup-fast-check.ts'],
  },
});
