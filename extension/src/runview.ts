// The main-area view of one run: a progress header with a Cancel button, and tabs for the
// graph (drawn by the server exactly as the notebook widget draws it), a timeline, the
// tasks table and the errors. Live runs are followed with a long-poll on the events
// endpoint; redraws are coalesced to at most REDRAWS_PER_S a second however many events
// arrive, and the (larger) tasks list is fetched at most once a second.
import { Widget } from '@lumino/widgets';

import { api, apiText, IEvents, IRunDetail, IRunView, ITask } from './api';
import { bytes, el, FILL, seconds, STROKE } from './format';

const REDRAWS_PER_S = 4;
const DETAIL_EVERY_MS = 1000;
const TABLE_ROWS = 500;
const TIMELINE_ROWS = 300;
const TABS = ['Graph', 'Timeline', 'Tasks', 'Errors', 'Report'];

export class RunView extends Widget {
  readonly runId: string;
  private header: HTMLElement;
  private progress: HTMLElement;
  private cancelButton: HTMLButtonElement;
  private message: HTMLElement;
  private tabBar: HTMLElement;
  private panes: { [tab: string]: HTMLElement } = {};
  private current = 'Graph';
  private view: IRunView | null = null;
  private detail: IRunDetail | null = null;
  private cursor = 0;
  private live = true;
  private disposedFlag = false;
  private dirty = false;
  private redrawTimer: number | undefined;
  private lastDetail = 0;
  private sortKey: keyof ITask | '' = '';
  private sortDesc = false;
  private filter = '';
  private reportLoaded = false;
  /** how many times the view was redrawn (read by the tests and the benchmark) */
  redraws = 0;

  constructor(runId: string) {
    super();
    this.runId = runId;
    this.id = `nbflow-run-${runId}`;
    this.addClass('nbflow-RunView');
    this.node.dataset.runId = runId;
    this.title.label = `Run ${runId}`;
    this.title.closable = true;
    this.header = el('div', { class: 'nbflow-RunView-header' });
    this.progress = el('div', { class: 'nbflow-RunView-progress' });
    this.cancelButton = el('button', { class: 'jp-mod-styled jp-mod-warn nbflow-cancel' }, 'Cancel run');
    this.cancelButton.onclick = () => this.cancel();
    this.cancelButton.style.display = 'none';
    this.message = el('div', { class: 'nbflow-RunView-message' });
    this.header.append(this.progress, this.cancelButton);
    this.tabBar = el('div', { class: 'nbflow-tabs', role: 'tablist' });
    const body = el('div', { class: 'nbflow-RunView-body' });
    for (const tab of TABS) {
      const b = el('button', { class: 'nbflow-tab', role: 'tab', 'data-tab': tab }, tab);
      b.onclick = () => this.showTab(tab);
      this.tabBar.appendChild(b);
      const pane = el('div', { class: 'nbflow-pane', 'data-pane': tab });
      this.panes[tab] = pane;
      body.appendChild(pane);
    }
    this.node.append(this.header, this.message, this.tabBar, body);
    this.showTab('Graph');
    void this.follow();
  }

  dispose(): void {
    this.disposedFlag = true;
    window.clearTimeout(this.redrawTimer);
    super.dispose();
  }

  private showTab(tab: string): void {
    this.current = tab;
    for (const b of Array.from(this.tabBar.children) as HTMLElement[]) {
      b.classList.toggle('nbflow-mod-active', b.dataset.tab === tab);
      b.setAttribute('aria-selected', String(b.dataset.tab === tab));
    }
    for (const [name, pane] of Object.entries(this.panes)) {
      pane.style.display = name === tab ? '' : 'none';
    }
    if (tab === 'Report') {
      void this.loadReport();
    } else if (tab !== 'Graph' && !this.detail) {
      void this.fetchDetail();
    } else {
      this.drawTab();
    }
  }

  /** Long-poll the events after the cursor until the run has ended. */
  private async follow(): Promise<void> {
    await this.redraw(true);
    while (!this.disposedFlag && this.live) {
      try {
        const got = await api<IEvents>(`runs/${this.runId}/events?after=${this.cursor}&timeout=10`);
        this.cursor = got.last;
        this.live = got.live;
        if (got.events.length || !got.live) {
          this.markDirty();
        }
      } catch (e) {
        this.message.textContent = `Lost contact with the server: ${(e as Error).message}; retrying`;
        await new Promise(r => setTimeout(r, 2000));
      }
    }
    window.clearTimeout(this.redrawTimer);
    await this.redraw(true);
  }

  private markDirty(): void {
    this.dirty = true;
    if (this.redrawTimer === undefined) {
      this.redrawTimer = window.setTimeout(() => {
        this.redrawTimer = undefined;
        if (this.dirty) {
          void this.redraw(false);
        }
      }, 1000 / REDRAWS_PER_S);
    }
  }

  private async redraw(full: boolean): Promise<void> {
    this.dirty = false;
    try {
      this.view = await api<IRunView>(`runs/${this.runId}/view`);
      this.redraws++;
      this.node.dataset.redraws = String(this.redraws);
      this.message.textContent = '';
    } catch (e) {
      this.message.textContent = (e as Error).message;
      return;
    }
    const v = this.view;
    this.node.dataset.status = v.status;
    this.progress.innerHTML = v.progress; // server-rendered, every value escaped there
    this.cancelButton.style.display = v.status === 'running' ? '' : 'none';
    this.title.label = `Run ${this.runId.slice(-6)} (${v.status})`;
    this.panes['Graph'].innerHTML = v.svg + (v.note ? `<div class="nbflow-note"></div>` : '');
    if (v.note) {
      this.panes['Graph'].querySelector('.nbflow-note')!.textContent = v.note;
    }
    const now = Date.now();
    if ((full || now - this.lastDetail >= DETAIL_EVERY_MS) && (this.current !== 'Graph' || full)) {
      await this.fetchDetail();
    }
  }

  private async fetchDetail(): Promise<void> {
    this.lastDetail = Date.now();
    try {
      this.detail = await api<IRunDetail>(`runs/${this.runId}`);
    } catch (e) {
      this.message.textContent = (e as Error).message;
      return;
    }
    this.drawTab();
  }

  private drawTab(): void {
    if (this.current === 'Timeline') {
      this.drawTimeline();
    } else if (this.current === 'Tasks') {
      this.drawTasks();
    } else if (this.current === 'Errors') {
      this.drawErrors();
    }
  }

  private async cancel(): Promise<void> {
    this.cancelButton.disabled = true;
    try {
      await api(`runs/${this.runId}/cancel`, { method: 'POST' });
      this.message.textContent = 'Cancel requested; the run stops within a second.';
    } catch (e) {
      this.message.textContent = `Could not cancel: ${(e as Error).message}`;
    } finally {
      this.cancelButton.disabled = false;
    }
  }

  private drawTimeline(): void {
    const pane = this.panes['Timeline'];
    const tasks = (this.detail?.tasks || []).filter(t => t.start !== null);
    if (!tasks.length) {
      pane.replaceChildren(el('div', { class: 'nbflow-empty' }, 'No task has started yet.'));
      return;
    }
    tasks.sort((a, b) => (a.start as number) - (b.start as number));
    const shown = tasks.slice(0, TIMELINE_ROWS);
    const t0 = shown[0].start as number;
    const now = Date.now() / 1000;
    const t1 = Math.max(...shown.map(t => t.end ?? now), t0 + 1e-3);
    const labelW = 180;
    const W = 900;
    const rowH = 16;
    const H = shown.length * rowH + 24;
    const x = (t: number) => labelW + ((t - t0) / (t1 - t0)) * (W - labelW - 10);
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('width', String(W));
    svg.setAttribute('height', String(H));
    svg.setAttribute('class', 'nbflow-timeline');
    shown.forEach((t, i) => {
      const y = i * rowH + 4;
      const label = document.createElementNS(ns, 'text');
      label.setAttribute('x', '4');
      label.setAttribute('y', String(y + 11));
      label.textContent = t.key.length > 26 ? t.key.slice(0, 25) + '…' : t.key;
      const state = t.cached ? 'cached' : t.state;
      const bar = document.createElementNS(ns, 'rect');
      const x0 = x(t.start as number);
      bar.setAttribute('x', String(x0));
      bar.setAttribute('y', String(y));
      bar.setAttribute('width', String(Math.max(2, x(t.end ?? now) - x0)));
      bar.setAttribute('height', String(rowH - 4));
      bar.setAttribute('fill', FILL[state] || '#eceff1');
      bar.setAttribute('stroke', STROKE[state] || '#b0bec5');
      bar.setAttribute('data-key', t.key);
      const tip = document.createElementNS(ns, 'title');
      tip.textContent = `${t.key}: ${t.state} ${seconds(t.duration_s)}`;
      bar.appendChild(tip);
      svg.append(label, bar);
    });
    const axis = document.createElementNS(ns, 'text');
    axis.setAttribute('x', String(labelW));
    axis.setAttribute('y', String(H - 4));
    axis.textContent = `0 s … ${seconds(t1 - t0)}` + (tasks.length > shown.length ? ` (first ${shown.length} of ${tasks.length} tasks)` : '');
    svg.appendChild(axis);
    pane.replaceChildren(svg);
  }

  private drawTasks(): void {
    const pane = this.panes['Tasks'];
    const all = this.detail?.tasks || [];
    const f = this.filter.toLowerCase();
    let rows = f
      ? all.filter(t => `${t.key} ${t.task} ${t.state} ${t.error || ''}`.toLowerCase().includes(f))
      : all.slice();
    if (this.sortKey) {
      const k = this.sortKey;
      const sign = this.sortDesc ? -1 : 1;
      rows.sort((a, b) => {
        const va = a[k] as any;
        const vb = b[k] as any;
        if (va === vb) return 0;
        if (va === null || va === undefined) return 1;
        if (vb === null || vb === undefined) return -1;
        return (va < vb ? -1 : 1) * sign;
      });
    }
    const box = el('input', {
      type: 'search',
      class: 'nbflow-task-filter',
      placeholder: 'filter tasks (key, function, state, error)'
    });
    box.value = this.filter;
    box.oninput = () => {
      this.filter = box.value;
      this.drawTasks();
      const again = this.panes['Tasks'].querySelector('input') as HTMLInputElement;
      again.focus();
      again.setSelectionRange(again.value.length, again.value.length);
    };
    const cols: (keyof ITask)[] = ['key', 'task', 'state', 'attempts', 'duration_s', 'cached', 'output_bytes', 'executor', 'reason', 'error'];
    const table = el('table', { class: 'nbflow-task-table' });
    const head = el('tr');
    for (const c of cols) {
      const th = el('th', { 'data-col': c }, c + (this.sortKey === c ? (this.sortDesc ? ' ▼' : ' ▲') : ''));
      th.onclick = () => {
        this.sortDesc = this.sortKey === c ? !this.sortDesc : false;
        this.sortKey = c;
        this.drawTasks();
      };
      head.appendChild(th);
    }
    table.appendChild(el('thead')).appendChild(head);
    const tbody = el('tbody');
    for (const t of rows.slice(0, TABLE_ROWS)) {
      const tr = el('tr', { 'data-key': t.key, 'data-state': t.state });
      for (const c of cols) {
        let v: any = t[c];
        if (c === 'duration_s') v = seconds(v);
        else if (c === 'output_bytes') v = bytes(v);
        else if (c === 'cached') v = v ? '✓' : '';
        const td = el('td', {}, v === null || v === undefined ? '' : String(v));
        if (c === 'state') {
          td.style.background = FILL[t.cached ? 'cached' : t.state] || '';
        }
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
    table.appendChild(tbody);
    const note = el('div', { class: 'nbflow-note' },
      `${rows.length} of ${all.length} tasks` + (rows.length > TABLE_ROWS ? ` (first ${TABLE_ROWS} shown)` : ''));
    pane.replaceChildren(box, note, table);
  }

  private drawErrors(): void {
    const pane = this.panes['Errors'];
    const errors = Object.entries(this.detail?.errors || {});
    if (!errors.length) {
      pane.replaceChildren(el('div', { class: 'nbflow-empty' }, 'No failed tasks.'));
      return;
    }
    pane.replaceChildren(
      ...errors.map(([key, text]) => {
        const box = el('details', { class: 'nbflow-error', open: '', 'data-key': key });
        box.appendChild(el('summary', {}, `${key}: ${text.trim().split('\n').slice(-1)[0]}`));
        box.appendChild(el('pre', {}, text));
        return box;
      })
    );
  }

  private async loadReport(): Promise<void> {
    if (this.reportLoaded) {
      return;
    }
    const pane = this.panes['Report'];
    try {
      const html = await apiText(`runs/${this.runId}/report`);
      const frame = el('iframe', { class: 'nbflow-report', sandbox: '' }) as HTMLIFrameElement;
      frame.srcdoc = html;
      pane.replaceChildren(frame);
      this.reportLoaded = true;
    } catch (e) {
      pane.replaceChildren(el('div', { class: 'nbflow-empty' }, (e as Error).message));
    }
  }
}
