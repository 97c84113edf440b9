/** Every image format platter opens, in probing order. */

import { FormatRegistry } from '../core/registry.js';
import { qcow2Format } from '../../formats/qcow2/index.js';
import { fileProtocol, rawFormat } from '../../formats/raw/index.js';
import { FOREIGN_IMAGE_FORMATS, foreignImageFormat } from '../../formats/foreign/index.js';

/**
 * The formats registry used by the engine; other VM image formats are
 * recognized and refused; qemu's file protocol is taken by name (-f file).
 */
export const formats = new FormatRegistry([qcow2Format, rawFormat], { recognize: foreignImageFormat, names: FOREIGN_IMAGE_FORMATS }, [fileProtocol]);
