import { defineConfig } from 'tsup';

// Two builds: the library (ESM + .d.ts; `core` is the runtime-agnostic part that
// never pulls in node:*) and the CLI (one file with a shebang; each command's code
// sits in its own chunk and is loaded only when that command runs).
export default defineConfig([
  {
    entry: { index: 'src/index.ts', core: 'src/core.ts' },
    format: ['esm'],
    target: 'node20',
    dts: true,
    sourcemap: false,
    clean: true,
    splitting: true,
  },
  {
    entry: { cli: 'src/cli/main.ts' },
    format: ['esm'],
    target: 'node20',
    banner: { js: '#!/usr/bin/env node' },
    splitting: true,
    outDir: 'dist',
    clean: false,
  },
]);
