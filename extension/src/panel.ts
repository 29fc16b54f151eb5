// The left-sidebar "Workflow runs" panel: every run in the store, newest first, refreshed
// once a second while the panel is visible (one small indexed query per refresh).
import { Widget } from '@lumino/widgets';

import { api, IRunSummary, IRunsPage } from './api';
import { doneText, el, seconds, STATUS, when } from './format';

const PAGE = 50;
const REFRESH_MS = 1000;

export class RunsPanel extends Widget {
  private list: HTMLElement;
  private footer: HTMLElement;
  private status: HTMLSelectElement;
  private name: HTMLInputElement;
  private limit = PAGE;
  private timer: number | undefined;
  private busy = false;

  constructor(private open: (id: string) => void) {
    super();
    this.id = 'nbflow-runs';
    this.addClass('nbflow-RunsPanel');
    this.title.caption = 'Workflow runs';
    const head = el('div', { class: 'nbflow-RunsPanel-head' });
    head.appendChild(el('div', { class: 'nbflow-RunsPanel-title' }, 'Workflow runs'));
    const filters = el('div', { class: 'nbflow-RunsPanel-filters' });
    this.status = el('select', { 'aria-label': 'status', class: 'nbflow-status-filter' });
    for (const s of ['', 'running', 'completed', 'failed', 'cancelled', 'interrupted']) {
      this.status.appendChild(el('option', { value: s }, s || 'any status'));
    }
    this.name = el('input', {
      type: 'search',
      placeholder: 'workflow name',
      'aria-label': 'workflow name',
      class: 'nbflow-name-filter'
    });
    this.status.onchange = () => this.refresh();
    this.name.onchange = () => this.refresh();
    filters.append(this.status, this.name);
    head.appendChild(filters);
    this.list = el('ul', { class: 'nbflow-RunsPanel-list' });
    this.footer = el('div', { class: 'nbflow-RunsPanel-footer' });
    this.node.append(head, this.list, this.footer);
  }

  protected onAfterAttach(): void {
    this.schedule(0);
  }

  protected onBeforeDetach(): void {
    window.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(ms: number): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.refresh(), ms);
  }

  async refresh(): Promise<void> {
    if (this.busy) {
      return;
    }
    this.busy = true;
    try {
      const q = new URLSearchParams({ limit: String(this.limit) });
      if (this.status.value) {
        q.set('status', this.status.value);
      }
      if (this.name.value.trim()) {
        q.set('name', this.name.value.trim());
      }
      const page = await api<IRunsPage>(`runs?${q.toString()}`);
      this.render(page);
    } catch (e) {
      this.footer.textContent = `Cannot read the runs: ${(e as Error).message}`;
    } finally {
      this.busy = false;
      if (this.isAttached) {
        this.schedule(REFRESH_MS);
      }
    }
  }

  private render(page: IRunsPage): void {
    const items = page.runs.map(r => this.item(r));
    this.list.replaceChildren(...items);
    this.footer.replaceChildren();
    if (!page.runs.length) {
      this.footer.textContent =
        'No runs in the store yet. Runs from notebooks, scripts and batch jobs appear here.';
    } else {
      this.footer.appendChild(el('span', {}, `${page.runs.length} of ${page.total} runs`));
      if (page.total > page.runs.length) {
        const more = el('button', { class: 'jp-mod-styled nbflow-more' }, 'Show more');
        more.onclick = () => {
          this.limit += PAGE;
          this.refresh();
        };
        this.footer.appendChild(more);
      }
    }
  }

  private item(r: IRunSummary): HTMLElement {
    const li = el('li', {
      class: 'nbflow-run',
      'data-run-id': r.id,
      'data-status': r.status,
      title: `${r.name} ${r.id}\nstarted ${when(r.start)}\nbackend ${r.backend || ''}`
    });
    const dot = el('span', { class: 'nbflow-dot' });
    dot.style.background = STATUS[r.status] || '#90a4ae';
    const name = el('span', { class: 'nbflow-run-name' }, r.name);
    const status = el('span', { class: 'nbflow-run-status' }, r.status);
    status.style.color = STATUS[r.status] || '#455a64';
    const line1 = el('div', { class: 'nbflow-run-line' });
    line1.append(dot, name, status);
    const bar = el('div', { class: 'nbflow-bar' });
    const fill = el('div', { class: 'nbflow-bar-fill' });
    // the share that completed (cached included): a cancelled run's bar is not full
    const frac = r.tasks ? r.completed / r.tasks : 0;
    fill.style.width = `${Math.round(frac * 100)}%`;
    fill.style.background = STATUS[r.status] || '#90a4ae';
    bar.appendChild(fill);
    if (r.live && r.running && r.tasks) {
      // the tasks at work now, drawn after the finished ones
      const going = el('div', { class: 'nbflow-bar-running' });
      going.style.width = `${Math.round((r.running / r.tasks) * 100)}%`;
      bar.appendChild(going);
    }
    const dur = r.live && r.start ? Date.now() / 1000 - r.start : r.duration_s;
    const facts = [doneText(r), seconds(dur)];
    if (r.live) {
      // a run still going: what is at work and what still waits (a finished run has neither)
      facts.push(`${r.running} running`, `${r.pending} pending`);
    }
    if (r.failed) {
      facts.push(`${r.failed} failed`);
    }
    // the tasks that ended without completing, by state (the count above leaves them out)
    if (r.cancelled) {
      facts.push(`${r.cancelled} cancelled`);
    }
    if (r.skipped) {
      facts.push(`${r.skipped} skipped`);
    }
    if (r.cached) {
      facts.push(`${r.cached} cached`);
    }
    if (r.live && r.done > 0 && r.start && r.tasks > r.done) {
      // a naive ETA from the pace so far (the prediction room will replace it)
      const eta = ((Date.now() / 1000 - r.start) / r.done) * (r.tasks - r.done);
      facts.push(`ETA ${seconds(eta)}`);
    }
    const line2 = el('div', { class: 'nbflow-run-facts' }, facts.filter(Boolean).join(' · '));
    const line3 = el('div', { class: 'nbflow-run-id' }, `${r.id} · ${when(r.start)}`);
    li.append(line1, bar, line2, line3);
    li.onclick = () => this.open(r.id);
    return li;
  }
}
