// dom.js builds the console's elements. Every piece of text goes through
// textContent (text nodes), never through markup: titles, descriptions and
// every other field come from calendar providers and are attacker-controlled.

// el creates an element. attrs: class, text, dataset, on<event> handlers,
// and plain attributes; children are nodes or values shown as text.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = String(v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'value') e.value = v;
    else if (k === 'checked') e.checked = !!v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// clear empties an element and appends children.
export function replace(e, ...children) {
  e.replaceChildren();
  append(e, children);
  return e;
}

// link makes an in-console link (#/...) from path segments, each encoded.
export function link(text, ...segments) {
  return el('a', { href: '#/' + segments.map(encodeURIComponent).join('/') }, text);
}

// fmtTime shows an RFC 3339 time (or Date) in UTC, to the second.
export function fmtTime(t) {
  if (!t) return '—';
  const d = t instanceof Date ? t : new Date(t);
  if (isNaN(d)) return String(t);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// fmtAge shows a number of seconds as a short duration.
export function fmtAge(seconds) {
  if (!seconds) return '0s';
  const s = Math.round(seconds);
  if (s < 120) return s + 's';
  if (s < 7200) return Math.round(s / 60) + 'm';
  if (s < 172800) return (s / 3600).toFixed(1) + 'h';
  return (s / 86400).toFixed(1) + 'd';
}

// shortEnum drops an enum's prefix: DELIVERY_STATE_DEAD -> DEAD.
export function shortEnum(v, prefix) {
  if (!v) return '';
  return String(v).startsWith(prefix) ? String(v).slice(prefix.length) : String(v);
}

// badge shows an enum value as a colored label.
export function badge(v, prefix) {
  const s = shortEnum(v, prefix);
  return el('span', { class: 'state ' + s }, s || '—');
}

// preview shows any field value as short text.
export function preview(v, max = 160) {
  if (v === undefined || v === null || v === '') return '∅';
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

// table builds a table from column headers and rows of cells.
export function table(headers, rows, empty = 'Nothing to show.') {
  if (!rows.length) return el('p', { class: 'muted' }, empty);
  return el('table', {},
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
    el('tbody', {}, rows));
}
