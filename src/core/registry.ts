/** A set of formats with scored probing. */

import { UsageError, WrongFormatError } from './errors.js';
import type { FormatModule } from './image.js';

/** Holds the known formats; the engine fills it, tests may build their own. */
export class FormatRegistry {
  private readonly formats = new Map<string, FormatModule>();

  constructor(modules: readonly FormatModule[] = []) {
    for (const module of modules) this.add(module);
  }

  add(module: FormatModule): void {
    this.formats.set(module.name, module);
  }

  names(): string[] {
    return [...this.formats.keys()];
  }

  /** The module for a -f name; an unknown name is a usage error listing the known ones. */
  get(name: string): FormatModule {
    const module = this.formats.get(name);
    if (!module) throw new UsageError(`unknown format '${name}' (known: ${this.names().join(', ')})`);
    return module;
  }

  /** The best-scoring format for these first bytes; ties go to the first registered. */
  probe(head: Uint8Array): FormatModule {
    let best: FormatModule | undefined;
    let bestScore = 0;
    for (const module of this.formats.values()) {
      const score = module.probe(head);
      if (score > bestScore) {
        best = module;
        bestScore = score;
      }
    }
    if (!best) throw new WrongFormatError('no known image format matches this file');
    return best;
  }
}
