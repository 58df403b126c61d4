import { defineConfig } from 'vitest/config';

// `npm run test:soak`: huge inputs, one file at a time (they measure peak RSS and need the disk).
export default defineConfig({
  test: {
    globalSetup: ['./test/helpers/global-setup.ts'],
    include: ['test/soak/**/*.soak.ts'],
    testTimeout: 4 * 3_600_000,
    hookTimeout: 120_000,
    maxWorkers: 1,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
