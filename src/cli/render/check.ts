/** qemu-img check's text and JSON renderings. */

import type { CheckReport } from '../../ops/check.js';
import { formatFixed } from '../../core/size.js';
import { qdictOrder } from '../../core/qdict-order.js';

/** The JSON object qemu-img check --output=json prints (fields present as qemu includes them). */
export function checkJson(report: CheckReport, filename: string): Record<string, unknown> {
  const object: Record<string, unknown> = { filename, format: report.format, 'check-errors': report.checkErrors };
  // qemu-img includes each of these only when it is not zero.
  const optional: [string, number][] = [
    ['image-end-offset', report.imageEndOffset],
    ['corruptions', report.corruptions],
    ['leaks', report.leaks],
    ['corruptions-fixed', report.corruptionsFixed],
    ['leaks-fixed', report.leaksFixed],
    ['total-clusters', report.totalClusters],
    ['allocated-clusters', report.allocatedClusters],
    ['fragmented-clusters', report.fragmentedClusters],
    ['compressed-clusters', report.compressedClusters],
  ];
  for (const [key, value] of optional) if (value !== 0) object[key] = value;
  return qdictOrder(object);
}

/** As qemu-img prints them: C's %.2f of the double, ties to even. */
const percent = (part: number, whole: number) => formatFixed((part * 100) / whole, 2);

/** The text qemu-img check prints on stdout. */
export function renderCheck(report: CheckReport): string {
  let text = '';
  if (report.repaired) {
    text +=
      'The following inconsistencies were found and repaired:\n\n' +
      `    ${report.leaksFixed} leaked clusters\n    ${report.corruptionsFixed} corruptions\n\n` +
      'Double checking the fixed image now...\n';
  }
  if (report.corruptions === 0 && report.leaks === 0 && report.checkErrors === 0) {
    text += 'No errors were found on the image.\n';
  } else {
    if (report.corruptions) {
      text += `\n${report.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (report.leaks) text += `\n${report.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    if (report.checkErrors) text += `\n${report.checkErrors} internal errors have occurred during the check.\n`;
  }
  if (report.totalClusters !== 0 && report.allocatedClusters !== 0) {
    text +=
      `${report.allocatedClusters}/${report.totalClusters} = ${percent(report.allocatedClusters, report.totalClusters)}% allocated, ` +
      `${percent(report.fragmentedClusters, report.allocatedClusters)}% fragmented, ${percent(report.compressedClusters, report.allocatedClusters)}% compressed clusters\n`;
  }
  if (report.imageEndOffset !== 0) text += `Image end offset: ${report.imageEndOffset}\n`;
  return text;
}
