/**
 * HTML with every interpolated value escaped: `html\`<td>${label}</td>\`` can never turn a label
 * into markup. Only what `html` itself produced (an Html) is inserted as it is, so page structure
 * comes from runcap's templates alone; arrays of Html are joined. Agent-written text also has its
 * hidden characters shown as escapes (withEscapes), as on the CLI's approval screen.
 */
import { withEscapes } from '../../policy/display.js';

export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

type Value = Html | string | number | boolean | null | undefined | readonly Value[];

function render(value: Value): string {
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(render).join('');
  if (value === null || value === undefined || value === false) return '';
  return escapeHtml(value);
}

export function html(strings: TemplateStringsArray, ...values: Value[]): Html {
  let out = strings[0]!;
  values.forEach((v, i) => (out += render(v) + strings[i + 1]!));
  return new Html(out);
}

/** Text an agent wrote: escaped, and its control, invisible and space-like characters shown as \xNN / \uNNNN. */
export const agentText = (text: unknown): Html => new Html(escapeHtml(withEscapes(text)));
