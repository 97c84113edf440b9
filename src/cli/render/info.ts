/** qemu-img info's text layout. */

import { formatSize } from '../../core/size.js';
import type { ImageInfo, SnapshotJson } from '../../ops/info.js';

/** Renders one image's info block as `qemu-img info` does. */
export function renderInfo(info: ImageInfo): string {
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${formatSize(info['virtual-size'])} (${info['virtual-size']} bytes)`,
    `disk size: ${info['actual-size'] === undefined ? 'unavailable' : formatSize(info['actual-size'])}`,
  ];
  if (info.encrypted) lines.push('encrypted: yes');
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${info['cluster-size']}`);
  if (info['dirty-flag']) lines.push('cleanly shut down: no');
  if (info['backing-filename'] !== undefined) {
    const full = info['full-backing-filename'];
    const shown = full && full !== info['backing-filename'] ? `${info['backing-filename']} (actual path: ${full})` : info['backing-filename'];
    lines.push(`backing file: ${shown}`);
    if (info['backing-filename-format']) lines.push(`backing file format: ${info['backing-filename-format']}`);
  }
  if (info.snapshots?.length) lines.push('Snapshot list:', ...renderSnapshotTable(info.snapshots));
  if (info['format-specific']) {
    lines.push('Format specific information:', ...renderTree(info['format-specific'].data, '    '));
  }
  return lines.join('\n') + '\n';
}

/** Renders a chain of infos, separated by blank lines, as `qemu-img info --backing-chain`. */
export function renderInfoChain(chain: ImageInfo[]): string {
  return chain.map(renderInfo).join('\n');
}

/** The snapshot table qemu-img prints (`ID TAG VM SIZE DATE VM CLOCK ICOUNT`). */
export function renderSnapshotTable(snapshots: SnapshotJson[]): string[] {
  // qemu's bdrv_snapshot_dump: "%-10s%-17s%8s%20s%13s%11s".
  const header = `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}`;
  return [header, ...snapshots.map(renderSnapshotRow)];
}

function renderSnapshotRow(s: SnapshotJson): string {
  const date = new Date(s['date-sec'] * 1000);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const dateText = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const clockSec = s['vm-clock-sec'];
  const clock = `${pad(Math.floor(clockSec / 3600))}:${pad(Math.floor(clockSec / 60) % 60)}:${pad(clockSec % 60)}.${pad(Math.floor(s['vm-clock-nsec'] / 1e6), 3)}`;
  const icount = s.icount === undefined ? '' : String(s.icount);
  // qemu's bdrv_snapshot_dump: "%-9s %-16s %8s%20s%13s%11s" (a long name or size pushes the rest right).
  return `${s.id.padEnd(9)} ${s.name.padEnd(16)} ${formatSize(s['vm-state-size']).padStart(8)}${dateText.padStart(20)}${clock.padStart(13)}${icount.padStart(11)}`;
}

function renderTree(data: Record<string, unknown>, indent: string): string[] {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(data)) {
    const label = key.replace(/-/g, ' ');
    if (Array.isArray(value)) {
      lines.push(`${indent}${label}:`);
      value.forEach((item, index) => {
        // qemu's dump_qlist: objects open a nested block, scalars sit on the index line.
        if (item && typeof item === 'object') {
          lines.push(`${indent}    [${index}]:`, ...renderTree(item as Record<string, unknown>, indent + '        '));
        } else {
          lines.push(`${indent}    [${index}]: ${String(item)}`);
        }
      });
    } else if (value && typeof value === 'object') {
      lines.push(`${indent}${label}:`, ...renderTree(value as Record<string, unknown>, indent + '    '));
    } else {
      lines.push(`${indent}${label}: ${String(value)}`);
    }
  }
  return lines;
}
