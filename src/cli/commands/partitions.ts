/** `platter partitions`: list a partition table like `sfdisk -l`, `--json`, `-d`; write one from a script. */

import { readFile } from 'node:fs/promises';
import type { CliCommand } from '../command.js';
import { IoError, NotFoundError, PlatterError, ReadOnlyError, UnsupportedFeatureError } from '../../core/errors.js';
import type { Image } from '../../core/image.js';
import { listPartitions, sfdiskJson, sfdiskScript, writePartitions, type PartitionListing } from '../../ops/partitions.js';
import { openForCli, withImage } from '../open.js';
import { printText, withFormat } from '../output.js';
import { namedFilePolicyOf, withNamedFilePolicy, type NamedFilePolicy } from '../policy.js';
import { smartcolsJson } from '../render/smartcols-json.js';
import { renderPartitions } from '../render/partitions.js';
import { warn } from '../report.js';

async function readScript(source: string): Promise<string> {
  try {
    if (source === '-') {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    }
    return await readFile(source, 'utf8');
  } catch (error) {
    throw new IoError(`cannot read script '${source}': ${(error as Error).message}`);
  }
}

/** Opens the image for writing, refusing formats whose images cannot be written yet. */
async function openForWrite(path: string, format: string | undefined, policy: NamedFilePolicy): Promise<Image> {
  const probe = await openForCli(path, { format, noBacking: true });
  const kind = probe.format;
  await probe.close();
  if (kind === 'raw') return openForCli(path, { format, writable: true, ...policy });
  const unsupported = () => new UnsupportedFeatureError(`writing to ${kind} images is not supported yet`).inFile(path);
  let image: Image;
  try {
    image = await openForCli(path, { format, writable: true, ...policy });
  } catch (error) {
    if (error instanceof ReadOnlyError || error instanceof UnsupportedFeatureError) throw unsupported();
    throw error;
  }
  if (!image.writable || typeof image.write !== 'function') {
    await image.close();
    throw unsupported();
  }
  return image;
}

function print(listing: PartitionListing, output: string): void {
  for (const warning of listing.warnings) warn(`${listing.device}: ${warning}`);
  if (output === 'human') return printText(renderPartitions(listing));
  const found = output === 'json' ? sfdiskJson(listing) : sfdiskScript(listing);
  if (found === undefined) throw new NotFoundError('does not contain a recognized partition table').inFile(listing.device);
  // As sfdisk prints them: the script as text, the document in util-linux's JSON layout.
  printText(typeof found === 'string' ? found : `${smartcolsJson(found)}\n`);
}

const command: CliCommand = {
  command: 'partitions <image>',
  describe: 'List or write the partition table (MBR or GPT) of an image',
  builder: (yargs) =>
    withNamedFilePolicy(withFormat(yargs))
      .positional('image', { type: 'string', describe: 'Image file (raw, qcow2, …)', demandOption: true })
      .option('output', { choices: ['human', 'json', 'sfdisk'] as const, default: 'human', describe: 'human: like sfdisk -l; json: like sfdisk --json; sfdisk: a script like sfdisk -d' })
      .option('write', { type: 'string', requiresArg: true, describe: "Write the table described by this sfdisk script ('-' reads stdin)" })
      .example('platter partitions disk.img', 'The table as sfdisk -l -uS shows it, with each partition’s filesystem')
      .example('platter partitions --output=json disk.qcow2', "sfdisk --json's document for the virtual disk of a qcow2 image")
      .example('platter partitions --output=sfdisk old.img | platter partitions --write - new.img', 'Copy a partition table to another image')
      .example("printf 'label: dos\\n,100M,L\\n,,Ex\\n,50M,S\\n' | platter partitions --write - disk.img", 'A Linux partition, an extended one, and a logical swap partition')
      .example('platter partitions --backing-root /srv/uploads /srv/uploads/vm.qcow2', 'Read through backing files only if they lie inside /srv/uploads'),
  async handler(args) {
    const path = args.image as string;
    const format = args.format as string | undefined;
    const output = args.output as string;
    if (typeof args.write === 'string') {
      const script = await readScript(args.write);
      const image = await openForWrite(path, format, namedFilePolicyOf(args));
      try {
        await writePartitions(image, script);
        print(await listPartitions(image, { device: path }), output);
      } catch (error) {
        if (error instanceof PlatterError) error.inFile(path);
        throw error;
      } finally {
        await image.close();
      }
      return;
    }
    await withImage(path, { format, ...namedFilePolicyOf(args) }, async (image) => print(await listPartitions(image, { device: path }), output));
  },
};

export default command;
