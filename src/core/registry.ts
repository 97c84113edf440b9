/** A set of formats with scored probing. */

import { UnsupportedFeatureError, UsageError, WrongFormatError } from './errors.js';
import type { FormatModule } from './image.js';

/** Formats recognized but not read: the name a file's first bytes show, and every such name. */
export interface RefusedFormats {
  recognize(head: Uint8Array): string | undefined;
  names: ReadonlySet<string>;
}

/** A probe score that leaves no doubt (a format's magic). */
const CERTAIN = 100;

/** Holds the known formats; the engine fills it, tests may build their own. */
export class FormatRegistry {
  private readonly formats = new Map<string, FormatModule>();
  /** Taken by name only: never probed, nor listed among the formats (qemu's file protocol as -f file). */
  private readonly byNameOnly = new Map<string, FormatModule>();

  constructor(
    modules: readonly FormatModule[] = [],
    private readonly refused: RefusedFormats = { recognize: () => undefined, names: new Set() },
    nameOnly: readonly FormatModule[] = [],
  ) {
    for (const module of modules) this.add(module);
    for (const module of nameOnly) this.byNameOnly.set(module.name, module);
  }

  add(module: FormatModule): void {
    this.formats.set(module.name, module);
  }

  names(): string[] {
    return [...this.formats.keys()];
  }

  /** The module for a -f name; an unknown name is a usage error listing the known ones. */
  get(name: string): FormatModule {
    const module = this.formats.get(name) ?? this.byNameOnly.get(name);
    if (module) return module;
    if (this.refused.names.has(name)) throw this.notRead(name);
    throw new UsageError(`unknown format '${name}' (known: ${this.names().join(', ')})`);
  }

  private notRead(name: string): UnsupportedFeatureError {
    return new UnsupportedFeatureError(`${name} images are not supported (platter reads ${this.names().join(' and ')}); -f raw reads the file's bytes as a disk`, {
      format: name,
    });
  }

  /**
   * The best-scoring format for these first bytes; ties go to the first
   * registered. A file that no format is certain of but that carries the mark
   * of a refused format is refused, not guessed (it would read as raw).
   */
  probe(head: Uint8Array): FormatModule {
    const name = this.nameOf(head);
    const module = this.formats.get(name);
    if (!module) throw this.notRead(name);
    return module;
  }

  /**
   * The name of the format these first bytes show, a refused format's name
   * included (where probe would refuse the file). Never throws for a format
   * it cannot open: it only names what the bytes look like.
   */
  nameOf(head: Uint8Array): string {
    const best = this.bestFor(head);
    return (best.score < CERTAIN ? this.refused.recognize(head) : undefined) ?? best.module.name;
  }

  private bestFor(head: Uint8Array): { module: FormatModule; score: number } {
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
    return { module: best, score: bestScore };
  }
}
