/**
 * Times convertToQcow2 (the op behind convert -O qcow2 [-c]) on one source:
 *   npx tsx test/bench/convert-qcow2.ts SOURCE TARGET [-c] [compression_type]
 * Prints wall seconds; run it under /usr/bin/time for CPU time and peak RSS.
 */
import { FileDevice } from '../../src/node/file-device.js';
import { nodeHost } from '../../src/node/host.js';
import { openImageFile } from '../../src/node/open.js';
import { convertToQcow2 } from '../../src/ops/convert-qcow2.js';

const [source, target, flag, compression] = process.argv.slice(2);
const started = performance.now();
const image = await openImageFile(source!);
const device = await FileDevice.open(target!, { create: true });
const options = new Map<string, string>(compression ? [['compression_type', compression]] : []);
const result = await convertToQcow2(image, device, { options, compress: flag === '-c', host: nodeHost() });
await device.close();
await image.close();
console.log(JSON.stringify({ seconds: (performance.now() - started) / 1000, ...result }));
