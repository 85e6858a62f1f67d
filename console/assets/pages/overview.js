// The Overview page: the numbers /metrics serves, refreshed every two
// seconds, and the change log's bounds.
import * as api from '../api.js';
import { el, replace, fmtTime, fmtAge, table } from '../dom.js';

const refreshMs = 2000;

function card(label, value, opts = {}) {
  return el('div', { class: 'card' + (opts.bad ? ' bad' : ''), dataset: { metric: opts.key || label } },
    el('div', { class: 'label' }, label),
    el('div', { class: 'value' + (opts.small ? ' small' : '') }, value));
}

function byLabels(counters, rowKey, colKey) {
  const rows = new Map(), cols = new Set();
  for (const c of counters) {
    const r = c.labels[rowKey], k = c.labels[colKey];
    cols.add(k);
    if (!rows.has(r)) rows.set(r, new Map());
    rows.get(r).set(k, c.value);
  }
  const colList = [...cols].sort();
  return table([rowKey, ...colList], [...rows.keys()].sort().map((r) =>
    el('tr', { dataset: { [rowKey]: r } }, el('td', {}, r), colList.map((k) => el('td', { dataset: { [colKey]: k } }, rows.get(r).get(k) ?? 0)))),
  'None yet.');
}

export function render(root, _args, ctx) {
  const body = el('div');
  replace(root, el('h1', {}, 'Overview'),
    el('p', { class: 'muted' }, 'Live from the same registry as /metrics; refreshed every 2 seconds.'), body);
  let timer = null, stopped = false;
  async function load() {
    try {
      const o = await api.get('/v1/console/overview');
      if (stopped) return;
      const cl = o.change_log;
      replace(body,
        el('div', { class: 'cards' },
          card('Inbox backlog', o.inbox_pending, { key: 'inbox_pending' }),
          card('Oldest pending', fmtAge(o.inbox_oldest_pending_age_seconds), { key: 'inbox_oldest', bad: o.inbox_oldest_pending_age_seconds > 60 }),
          card('Dead letters', o.inbox_dead, { key: 'inbox_dead', bad: o.inbox_dead > 0 }),
          card('Watch streams open', o.watch_streams, { key: 'watch_streams' }),
          card('Changes sent', o.watch_changes_sent, { key: 'changes_sent' }),
          card('Change log head', cl.head, { key: 'change_log_head' }),
          card('Compacted up to', cl.compacted, { key: 'change_log_compacted' }),
          card('Oldest change kept', fmtTime(cl.oldest_commit_time), { key: 'oldest_change', small: true }),
          card('Retention', fmtAge(cl.retention_seconds), { key: 'retention' }),
        ),
        el('div', { class: 'split' },
          el('div', {}, el('h2', {}, 'Webhooks received'), byLabels(o.webhooks_received, 'provider', 'outcome')),
          el('div', {}, el('h2', {}, 'Processing attempts'), byLabels(o.deliveries_processed, 'provider', 'outcome'))),
        el('div', { class: 'split' },
          el('div', {}, el('h2', {}, 'Dead-lettered since start'),
            table(['provider', 'deliveries'], o.dead_lettered.map((c) => el('tr', {}, el('td', {}, c.labels.provider), el('td', {}, c.value))), 'None.')),
          el('div', {}, el('h2', {}, 'Refused API credentials'),
            table(['reason', 'requests'], o.auth_failures.map((c) => el('tr', {}, el('td', {}, c.labels.reason), el('td', {}, c.value))), 'None.'))),
        el('p', { class: 'muted' }, 'As of ' + fmtTime(o.time) + '. Head cursor: ', el('code', {}, cl.head_cursor)),
      );
    } catch (err) {
      if (stopped) return;
      ctx.report(body, err);
      if (err.status === 401) return;
    }
    if (!stopped) timer = setTimeout(load, refreshMs);
  }
  ctx.onCleanup(() => { stopped = true; clearTimeout(timer); });
  load();
}
