/**
 * V8's optimising compiler, made patient for the commands that copy data.
 *
 * V8 optimises a function once it has run a budget of bytecode, a budget
 * sized for pages that run for minutes. A copy runs the same few dozen
 * functions once per request, a few thousand times in all, so V8 optimises
 * them within the first tenth of a second and inlines their callees deeply:
 * converting 2 GiB of raw into qcow2 on a 2-core VM, 29 functions took 178 ms
 * of compiling on a V8 thread, on the cores the copy's reads and writes
 * need, to speed up JavaScript that ran for about 60 ms in all. With eight
 * times the budget only the functions that stay hot are optimised: median of
 * 9 alternating runs each, user CPU 316 -> 222 ms and wall 498 -> 453 ms for
 * that convert, 250 -> 179 ms and 444 -> 404 ms for raw -> raw, 127 -> 110 ms
 * wall for an empty 1 TiB image. Code that stays hot is still optimised soon
 * enough: under the same budget, `check` of 262,144 clusters (half a second in
 * JavaScript; not tuned here) took 516 ms against 519 ms.
 *
 * V8's flags belong to the process, so the launcher sets this, not runCli
 * (a program calling runCli keeps its own), and only after the bundle has
 * loaded: V8 rejects a code cache made under other flags (the build makes it
 * under the defaults). node:v8 loads Node's stream modules, a few
 * milliseconds that only these commands pay.
 */

import { nodeV8 } from '../node/builtins.js';
import { invokedEntry } from './commands.js';

/**
 * Bytecode budget before V8 considers optimising a function: eight times Node
 * 20's default (67,584). The flag has kept its name through V8's versions so
 * far; were it renamed, V8 would print "unrecognized flag" on stderr, which
 * the CLI tests would catch.
 */
export const PATIENT_INTERRUPT_BUDGET = 8 * 67_584;

/** Raises V8's optimisation budget for the rest of this process (its threads included) when `argv` runs a command that copies data. */
export function tuneOptimizer(argv: readonly string[]): void {
  if (invokedEntry(argv)?.copiesData) nodeV8().setFlagsFromString(`--interrupt-budget=${PATIENT_INTERRUPT_BUDGET}`);
}
