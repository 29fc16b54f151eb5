// Calls to the nbflow server extension (/nbflow/api/...). ServerConnection adds the
// server's token and the XSRF header, so every call goes through Jupyter's own auth.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IRunSummary {
  id: string;
  name: string;
  status: string;
  live: boolean;
  start: number | null;
  end: number | null;
  duration_s: number | null;
  backend: string | null;
  tasks: number;
  done: number;
  completed: number;
  cached: number;
  failed: number;
  skipped: number;
  cancelled: number;
  /** tasks not started yet, and tasks at work now (both 0 once a run has ended) */
  pending: number;
  running: number;
  error: string | null;
}

export interface IRunsPage {
  runs: IRunSummary[];
  total: number;
  limit: number;
  offset: number;
}

export interface ITask {
  key: string;
  task: string;
  state: string;
  attempts: number;
  start: number | null;
  end: number | null;
  duration_s: number | null;
  cached: boolean;
  output_bytes: number | null;
  error: string | null;
  executor: string | null;
  reason: string | null;
}

export interface IRunDetail {
  run: IRunSummary & { last_seq: number };
  tasks: ITask[];
  edges: [number, number][];
  errors: { [key: string]: string };
}

export interface IRunView {
  seq: number;
  status: string;
  svg: string;
  note: string | null;
  progress: string;
  counts: { [state: string]: number };
  tasks: number;
  done: number;
}

export interface IEvents {
  events: { seq: number; type: string; key: string | null }[];
  last: number;
  status: string;
  live: boolean;
  more: boolean;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

const settings = ServerConnection.makeSettings();

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'nbflow', 'api', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let data: any = text;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    // an HTML body (the report)
  }
  if (!response.ok) {
    throw new ApiError(response.status, (data && data.message) || response.statusText);
  }
  return data as T;
}

export async function apiText(path: string): Promise<string> {
  const url = URLExt.join(settings.baseUrl, 'nbflow', 'api', path);
  const response = await ServerConnection.makeRequest(url, {}, settings);
  const text = await response.text();
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = JSON.parse(text).message || message;
    } catch {
      // keep the status text
    }
    throw new ApiError(response.status, message);
  }
  return text;
}
