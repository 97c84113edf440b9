/**
 * A small parser for LVM2's text metadata ("config") syntax:
 * `name = value`, `name { ... }`, values are integers, floats, "strings" and
 * [arrays], `#` starts a comment. Bounded in depth; input size is bounded by the caller.
 */

import { CorruptImageError, LimitExceededError } from '../../src/core/errors.js';
import { MAX_CONFIG_DEPTH } from './limits.js';

/** A value in metadata text. */
export type ConfigValue = number | string | ConfigValue[] | ConfigSection;

/** A section: its names in order of appearance. */
export interface ConfigSection {
  [name: string]: ConfigValue;
}

/** A section's value as a nested section, or undefined. */
export function sectionOf(value: ConfigValue | undefined): ConfigSection | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? value : undefined;
}

class ConfigParser {
  private at = 0;

  constructor(private readonly text: string, private readonly where: number) {}

  parseDocument(): ConfigSection {
    const section = this.parseItems(0);
    this.skipSpace();
    if (this.at < this.text.length) this.fail('unexpected text');
    return section;
  }

  private fail(message: string): never {
    throw new CorruptImageError(`LVM metadata: ${message} at character ${this.at}`, this.where);
  }

  private skipSpace(): void {
    while (this.at < this.text.length) {
      const char = this.text[this.at]!;
      if (char === '#') {
        const end = this.text.indexOf('\n', this.at);
        this.at = end < 0 ? this.text.length : end + 1;
      } else if (char === ' ' || char === '\t' || char === '\n' || char === '\r' || char === '\0') {
        this.at++;
      } else {
        return;
      }
    }
  }

  private parseItems(depth: number): ConfigSection {
    if (depth > MAX_CONFIG_DEPTH) throw new LimitExceededError(`LVM metadata nests deeper than ${MAX_CONFIG_DEPTH} levels`);
    const section: ConfigSection = Object.create(null) as ConfigSection;
    for (;;) {
      this.skipSpace();
      if (this.at >= this.text.length || this.text[this.at] === '}') return section;
      const name = this.parseName();
      this.skipSpace();
      const char = this.text[this.at];
      if (char === '{') {
        this.at++;
        section[name] = this.parseItems(depth + 1);
        this.skipSpace();
        if (this.text[this.at] !== '}') this.fail(`section '${name}' is not closed`);
        this.at++;
      } else if (char === '=') {
        this.at++;
        section[name] = this.parseValue(depth + 1);
      } else {
        this.fail(`expected '=' or '{' after '${name}'`);
      }
    }
  }

  private parseName(): string {
    const match = /^[A-Za-z0-9_.+\-]+/.exec(this.text.slice(this.at, this.at + 256));
    if (!match) this.fail('expected a name');
    this.at += match[0].length;
    return match[0];
  }

  private parseValue(depth: number): ConfigValue {
    this.skipSpace();
    const char = this.text[this.at];
    if (char === '"') return this.parseString();
    if (char === '[') return this.parseArray(depth);
    const match = /^-?[0-9]+(\.[0-9]+)?/.exec(this.text.slice(this.at, this.at + 64));
    if (!match) this.fail('expected a value');
    this.at += match[0].length;
    return Number(match[0]);
  }

  private parseString(): string {
    let value = '';
    for (this.at++; this.at < this.text.length; this.at++) {
      const char = this.text[this.at]!;
      if (char === '"') {
        this.at++;
        return value;
      }
      if (char === '\\' && this.at + 1 < this.text.length) this.at++;
      value += this.text[this.at];
    }
    return this.fail('string is not closed');
  }

  private parseArray(depth: number): ConfigValue[] {
    if (depth > MAX_CONFIG_DEPTH) throw new LimitExceededError(`LVM metadata nests deeper than ${MAX_CONFIG_DEPTH} levels`);
    const values: ConfigValue[] = [];
    this.at++;
    for (;;) {
      this.skipSpace();
      if (this.text[this.at] === ']') {
        this.at++;
        return values;
      }
      if (this.at >= this.text.length) this.fail('array is not closed');
      values.push(this.parseValue(depth + 1));
      this.skipSpace();
      if (this.text[this.at] === ',') this.at++;
    }
  }
}

/** Parses metadata text; `where` is the byte offset of the text, for error messages. */
export function parseConfig(text: string, where = 0): ConfigSection {
  return new ConfigParser(text, where).parseDocument();
}
