// The nbflow JupyterLab extension: a "Workflow runs" sidebar fed from the run store through
// the nbflow server extension, a run view per run, a command-palette entry and a launcher item.
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { LabIcon } from '@jupyterlab/ui-components';

import { RunsPanel } from './panel';
import { RunView } from './runview';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
  '<rect x="2" y="3" width="7" height="5" rx="1"/><rect x="15" y="3" width="7" height="5" rx="1"/>' +
  '<rect x="8.5" y="16" width="7" height="5" rx="1"/>' +
  '<path d="M5.5 8v3.5h13V8h-1.5v2h-10V8zM11.25 11.5h1.5V16h-1.5z"/></g></svg>';

export const runsIcon = new LabIcon({ name: 'nbflow:runs', svgstr: ICON_SVG });

const CMD_RUNS = 'nbflow:open-runs';
const CMD_RUN = 'nbflow:open-run';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbflow:dashboard',
  description: 'Workflow runs from the nbflow run store, live',
  autoStart: true,
  optional: [ICommandPalette, ILauncher, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null
  ) => {
    const tracker = new WidgetTracker<MainAreaWidget<RunView>>({ namespace: 'nbflow-run' });
    const panel = new RunsPanel(id => void app.commands.execute(CMD_RUN, { id }));
    panel.title.icon = runsIcon;
    app.shell.add(panel, 'left', { rank: 600 });

    app.commands.addCommand(CMD_RUNS, {
      label: 'Workflow runs',
      caption: 'Show the nbflow runs panel',
      icon: runsIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CMD_RUN, {
      label: args => (args.id ? `Workflow run ${args.id}` : 'Workflow run'),
      execute: args => {
        const id = String(args.id || '');
        const open = tracker.find(w => w.content.runId === id);
        if (open) {
          app.shell.activateById(open.id);
          return open;
        }
        const content = new RunView(id);
        const widget = new MainAreaWidget({ content });
        widget.id = `nbflow-run-area-${id}`;
        widget.title.icon = runsIcon;
        content.title.changed.connect(() => {
          widget.title.label = content.title.label;
        });
        widget.title.label = content.title.label;
        void tracker.add(widget);
        app.shell.add(widget, 'main');
        app.shell.activateById(widget.id);
        return widget;
      }
    });
    if (palette) {
      palette.addItem({ command: CMD_RUNS, category: 'nbflow' });
    }
    if (launcher) {
      launcher.add({ command: CMD_RUNS, category: 'Other', rank: 10 });
    }
    if (restorer) {
      restorer.add(panel, 'nbflow-runs');
      void restorer.restore(tracker, {
        command: CMD_RUN,
        args: w => ({ id: w.content.runId }),
        name: w => w.content.runId
      });
    }
  }
};

export default plugin;
