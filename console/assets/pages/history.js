// The Event history page: every change of one event still in the change
// log, oldest first, with the fields each update changed (old → new). The
// server searches the log a slice at a time; the page follows next_cursor
// until the search is complete.
import * as api from '../api.js';
import { el, replace, link, fmtTime, badge, preview, table } from '../dom.js';
import { changedList } from './live.js';

// maxRequests bounds how long one page load keeps searching.
const maxRequests = 200;

export function render(root, args, ctx) {
  const input = el('input', { type: 'text', class: 'wide', name: 'event', placeholder: 'evt_…', value: args[0] || '' });
  const out = el('div', { id: 'history' });
  const form = el('form', { class: 'toolbar' }, el('label', {}, 'Event id', input), el('button', { type: 'submit' }, 'Show history'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = '#/history/' + encodeURIComponent(input.value.trim());
  });
  replace(root, el('h1', {}, 'Event history'), form, out);
  if (!args[0]) {
    replace(out, el('p', { class: 'muted' }, 'Enter an event id, or follow a "history" link from Calendars or Live changes.'));
    return;
  }
  let stopped = false;
  ctx.onCleanup(() => { stopped = true; });
  load(args[0]);

  async function load(id) {
    replace(out, el('p', { class: 'muted' }, 'Searching the change log…'));
    try {
      const changes = [];
      let after = '', answer, requests = 0;
      do {
        answer = await api.get('/v1/console/events/' + encodeURIComponent(id) + '/history', { after_cursor: after });
        if (stopped) return;
        changes.push(...answer.changes);
        after = answer.next_cursor;
      } while (!answer.complete && ++requests < maxRequests);
      const { event } = await api.get('/v1/calendars/' + encodeURIComponent(answer.calendar_id) + '/events/' + encodeURIComponent(id));
      if (stopped) return;
      let before = null;
      const rows = changes.map((ch) => {
        const prev = ch.previous_event || before;
        before = ch.event;
        const changed = (ch.changed_fields || []).map((f) => ({ field: f, new: preview(ch.event[f]), old: prev ? preview(prev[f]) : null }));
        return el('tr', { dataset: { cursor: ch.cursor, type: ch.type } },
          el('td', {}, fmtTime(ch.commit_time)), el('td', {}, badge(ch.type, 'CHANGE_TYPE_')),
          el('td', { class: 'wrap history-title' }, ch.event.title || '(no title)'),
          el('td', { class: 'wrap' }, changedList(changed)));
      });
      replace(out,
        el('dl', { class: 'facts panel' },
          el('dt', {}, 'Event'), el('dd', { class: 'mono' }, event.id),
          el('dt', {}, 'Title now'), el('dd', { class: 'event-title' }, event.title || '(no title)'),
          el('dt', {}, 'Calendar'), el('dd', {}, link(event.calendar_id, 'calendars', event.calendar_id)),
          el('dt', {}, 'Starts'), el('dd', {}, event.all_day ? event.start_date : fmtTime(event.start_time)),
          el('dt', {}, 'Provider'), el('dd', {}, event.provider + ' · ' + event.provider_event_id),
          el('dt', {}, 'Deleted'), el('dd', {}, event.deleted ? 'yes' : 'no')),
        answer.compacted_before ? el('p', { class: 'muted' }, 'Older changes were compacted out of the change log (see retention on Overview).') : null,
        answer.complete ? null : el('p', { class: 'error' }, 'The search stopped before the end of the change log; showing what was found.'),
        table(['Committed', 'Type', 'Title', 'Changed fields'], rows, 'No change of this event is left in the change log.'));
    } catch (err) { ctx.report(out, err); }
  }
}
