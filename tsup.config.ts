import { readFile } from 'node:fs/promises';
import type { Plugin } from 'esbuild';
import { defineConfig } from 'tsup';

/** Packages bundled into the CLI: resolving yargs' ~40 small modules one by one costs more start-up than one file. */
const CLI_BUNDLED = ['yargs', 'yargs-parser', 'cliui', 'y18n', 'escalade', 'get-caller-file', 'string-width', 'strip-ansi', 'wrap-ansi', 'ansi-regex', 'ansi-styles', 'emoji-regex', 'get-east-asian-width'];

/** CommonJS's module wrapper (node:module's wrap), around the CLI body. */
const CJS_WRAPPER_HEAD = '(function (exports, require, module, __filename, __dirname) {';
const CJS_WRAPPER_TAIL = '\n});';

/**
 * yargs' Node shim reads process.stdout.columns as it loads, which creates
 * process.stdout and loads node's stream modules (and net, for a pipe): 3-5 ms
 * of every start, for a width platter sets itself. In the bundle that value is
 * a getter, read only if yargs asks; the build fails if the line changes.
 */
const lazyStdColumns: Plugin = {
  name: 'yargs-lazy-std-columns',
  setup(build) {
    build.onLoad({ filter: /yargs[\\/]lib[\\/]platform-shims[\\/]esm\.mjs$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const eager = "stdColumns: typeof process.stdout.columns !== 'undefined' ? process.stdout.columns : null";
      if (!source.includes(eager)) throw new Error(`${args.path}: yargs' stdColumns line has changed (see tsup.config.ts)`);
      return { contents: source.replace(eager, 'get stdColumns() { return process.stdout.columns ?? null; }'), loader: 'js' };
    });
  },
};

// Three builds: the library (ESM + .d.ts; `core` is the runtime-agnostic part that
// never pulls in node:*); the CLI launcher (dist/cli.cjs with a shebang, and the
// loader, CommonJS because an ES-module entry point costs start-up); and the CLI
// body as one CommonJS file, which the loader compiles with V8's code cache
// (made after the build by scripts/cli-code-cache.mjs).
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
    entry: { cli: 'src/cli/main.ts', 'cli-loader': 'src/cli/bundle-loader.ts' },
    format: ['cjs'],
    target: 'node20',
    banner: { js: '#!/usr/bin/env node' },
    // import.meta.url in CommonJS.
    shims: true,
    outDir: 'dist',
    clean: false,
  },
  {
    entry: { 'cli-bundle': 'src/cli/bundle.ts' },
    format: ['cjs'],
    target: 'node20',
    // import.meta.url (used by yargs) in CommonJS.
    shims: true,
    noExternal: CLI_BUNDLED,
    esbuildPlugins: [lazyStdColumns],
    // The file is one function expression in CommonJS's wrapper, which the loader compiles
    // as it is: wrapping it at run time made V8 copy the whole source once more.
    banner: { js: CJS_WRAPPER_HEAD },
    footer: { js: CJS_WRAPPER_TAIL },
    esbuildOptions(options) {
      options.alias = {
        ...options.alias,
        assert: './src/cli/assert-shim.ts',
        'string-width': './src/cli/string-width-shim.ts',
        'escalade/sync': './src/cli/find-up-shim.ts',
      };
      // node:vm scripts cannot import(): the external zstd codec (CommonJS) is required instead.
      options.supported = { ...options.supported, 'dynamic-import': false };
      // Less to read, copy and hash at every start: 350 KB instead of 530 KB with the
      // names kept. The stack traces PLATTER_DEBUG=1 prints name minified functions.
      options.minifyWhitespace = true;
      options.minifySyntax = true;
      options.minifyIdentifiers = true;
    },
    outDir: 'dist',
    clean: false,
  },
]);
