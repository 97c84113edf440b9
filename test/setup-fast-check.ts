/**
 * fast-check seeds: random by default, so local runs keep exploring; fixed in CI
 * (CI=true) so a run is reproducible; FC_SEED=N replays any seed.
 */

import fc from 'fast-check';

const CI_SEED = 20261122;
const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : process.env.CI === 'true' ? CI_SEED : undefined;
if (seed !== undefined && Number.isInteger(seed)) fc.configureGlobal({ ...fc.readConfigureGlobal(), seed });
