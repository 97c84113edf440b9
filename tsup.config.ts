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
    // yargs is bundled: resolving its ~40 small modules one by one costs more start-up than parsing one file.
    noExternal: ['yargs', 'yargs-parser', 'cliui', 'y18n', 'escalade', 'get-caller-file', 'string-width', 'strip-ansi', 'wrap-ansi', 'ansi-regex', 'ansi-styles', 'emoji-regex', 'get-east-asian-width'],
    esbuildOptions(options) {
      options.alias = { ...options.alias, assert: './src/cli/assert-shim.ts', 'string-width': './src/cli/string-width-shim.ts' };
    },
    outDir: 'dist',
    clean: false,
  },
]);
