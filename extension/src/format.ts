// Colours and formatting shared by the panel and the run view. The state colours are the
// inline widget's (nbflow/notebook/render.py COLOURS), so a run looks the same everywhere.

export const FILL: { [state: string]: string } = {
  pending: '#eceff1',
  ready: '#dbeafe',
  running: '#fde68a',
  retrying: '#fed7aa',
  completed: '#bbf7d0',
  cached: '#a5f3fc',
  failed: '#fecaca',
  skipped: '#f5f5f5',
  cancelled: '#e5e7eb'
};

export const STROKE: { [state: string]: string } = {
  pending: '#b0bec5',
  ready: '#60a5fa',
  running: '#d97706',
  retrying: '#ea580c',
  completed: '#16a34a',
  cached: '#0891b2',
  failed: '#dc2626',
  skipped: '#bdbdbd',
  cancelled: '#6b7280'
};

export const STATUS: { [status: string]: string } = {
  pending: '#90a4ae',
  running: '#d97706',
  completed: '#16a34a',
  failed: '#dc2626',
  cancelled: '#6b7280',
  interrupted: '#7c3aed'
};

export function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !isFinite(s)) {
    return '';
  }
  if (s < 1) {
    return `${Math.round(s * 1000)} ms`;
  }
  if (s < 60) {
    return `${s.toFixed(1)} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** The counts a run list or header shows, as the notebook view says them
 * (nbflow/notebook/render.py _done_text): "7/10 tasks done" while every ended task completed;
 * once some failed, were skipped or were cancelled, how many completed ("120/302 tasks
 * completed"), so a cancelled or failed run does not read as finished. */
export function doneText(c: { tasks: number; done: number; completed: number }): string {
  if (c.completed === c.done) {
    return `${c.done}/${c.tasks} tasks done`;
  }
  return `${c.completed}/${c.tasks} tasks completed`;
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '';
  }
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

export function when(t: number | null): string {
  return t ? new Date(t * 1000).toLocaleString() : '';
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: { [name: string]: string } = {},
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}
