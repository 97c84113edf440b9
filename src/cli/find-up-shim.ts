/**
 * Stands in for escalade's synchronous find-up in the CLI bundle. yargs looks
 * for the nearest package.json at every start, listing each directory from the
 * working directory (or the folder holding node_modules) up to the root, only to
 * guess a version number that platter then sets itself. platter takes no
 * settings from any package.json, so this search finds nothing and lists nothing:
 * no start-up cost that grows with the size of a directory it has no business in.
 */
export default function findUp(): undefined {
  return undefined;
}
