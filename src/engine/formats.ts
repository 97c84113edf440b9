/** Every image format platter opens, in probing order. */

import { FormatRegistry } from '../core/registry.js';
import { qcow2Format } from '../../formats/qcow2/index.js';
import { rawFormat } from '../../formats/raw/index.js';

/** The formats registry used by the engine. */
export const formats = new FormatRegistry([qcow2Format, rawFormat]);
