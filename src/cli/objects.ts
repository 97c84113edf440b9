/**
 * qemu-img's `--object TYPE,id=ID,...` (or a JSON object): definitions of
 * qemu objects, such as the secrets that unlock encrypted images, which
 * scripts pass along with every command. platter opens no encrypted image
 * and refuses every option that would name an object (an image's
 * key-secret, a throttle group), so an object is never used, as qemu leaves
 * an object that nothing names: each definition is checked as qemu checks it,
 * and otherwise has no effect.
 */

import type { Argv } from 'yargs';
import { UsageError } from '../core/errors.js';
import { parseOptionString } from '../core/options.js';
import type { Args } from './command.js';

/** The object types qemu-img creates from --object that concern block tools. */
const OBJECT_TYPES = new Set([
  'secret',
  'secret_keyring',
  'throttle-group',
  'iothread',
  'tls-creds-anon',
  'tls-creds-psk',
  'tls-creds-x509',
  'tls-cipher-suites',
  'authz-simple',
  'authz-list',
  'authz-listfile',
  'authz-pam',
]);

/** Adds --object (repeatable) to a command. */
export function withObjects(yargs: Argv): Argv {
  return yargs
    .option('object', {
      type: 'string',
      requiresArg: true,
      describe: 'A qemu object definition, e.g. secret,id=sec0,file=key.txt: checked, and unused (platter opens no encrypted image)',
    })
    .middleware((args) => checkObjects(args as Args));
}

/** Checks every --object as qemu does: a known type, an id, no id twice. */
function checkObjects(args: Args): void {
  const given = args.object;
  const definitions = given === undefined ? [] : (Array.isArray(given) ? given : [given]).map(String);
  const ids = new Set<string>();
  for (const definition of definitions) {
    const { type, id } = objectOf(definition);
    if (!OBJECT_TYPES.has(type)) throw new UsageError(`Parameter 'qom-type' does not accept value '${type}'`);
    if (id === undefined) throw new UsageError("Parameter 'id' is missing");
    if (ids.has(id)) throw new UsageError(`attempt to add duplicate property '${id}' to object (type 'container')`);
    ids.add(id);
  }
}

/** The type and id of one definition: `TYPE,id=ID,...`, or JSON with qom-type and id. */
function objectOf(definition: string): { type: string; id?: string } {
  if (definition.trimStart().startsWith('{')) {
    let value: unknown;
    try {
      value = JSON.parse(definition);
    } catch (error) {
      throw new UsageError(`Could not parse the JSON object definition: ${(error as Error).message}`);
    }
    const object = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
    return { type: String(object['qom-type'] ?? ''), ...(object.id === undefined ? {} : { id: String(object.id) }) };
  }
  const comma = definition.indexOf(',');
  const type = comma < 0 ? definition : definition.slice(0, comma);
  const options = comma < 0 ? new Map<string, string>() : parseOptionString(definition.slice(comma + 1));
  return { type, ...(options.has('id') ? { id: options.get('id')! } : {}) };
}
