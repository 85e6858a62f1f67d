// The Calendars page: a searchable list, and one calendar's sync state,
// status history, latest deliveries and events in a time window, with a
// Resync action (POST /v1/calendars/{id}:resync).
import * as api from '../api.js';
import { el, replace, link, fmtTime, badge, preview, table } from '../dom.js';

// maxCalendars bounds how many calendars the list loads for searching.
const maxCalendars = 5000;

export function render(root, args, ctx) {
  if (args[0]) return renderCalendar(root, args[0], ctx);
  const provider = el('select', { name: 'provider' },
    el('option', { value: '' }, 'every provider'), el('option', { value: 'recall' }, 'recall'), el('option', { value: 'postpress' }, 'postpress'));
  const search = el('input', { type: 'search', name: 'q', placeholder: 'Search id, provider calendar id, email, status' });
  const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  let cals = [], truncated = false, generation = 0;
  replace(root, el('h1', {}, 'Calendars'),
    el('div', { class: 'toolbar' }, search, provider), list);

  function show() {
    const q = search.value.trim().toLowerCase();
    const rows = cals.filter((c) => !q || [c.id, c.provider, c.provider_calendar_id, c.email, c.status, c.platform, c.account_id]
      .some((v) => String(v || '').toLowerCase().includes(q)));
    replace(list,
      el('p', { class: 'muted' }, `${rows.length} of ${cals.length} calendars` + (truncated ? ` (only the first ${maxCalendars} are loaded)` : '')),
      table(['Calendar', 'Provider', 'Provider calendar id', 'Email', 'Platform', 'Status', 'Updated'],
        rows.map((c) => el('tr', { dataset: { calendarId: c.id } },
          el('td', { class: 'mono' }, link(c.id, 'calendars', c.id)),
          el('td', {}, c.provider),
          el('td', { class: 'wrap' }, c.provider_calendar_id),
          el('td', { class: 'wrap' }, c.email || '—'),
          el('td', {}, c.platform || '—'),
          el('td', {}, badge(c.status, 'CALENDAR_STATUS_')),
          el('td', {}, fmtTime(c.update_time)))),
        'No calendar matches.'));
  }

  async function load() {
    const gen = ++generation;
    cals = []; truncated = false;
    try {
      let token = '';
      do {
        const page = await api.get('/v1/calendars', { provider: provider.value, page_size: 1000, page_token: token });
        if (gen !== generation) return;
        cals.push(...page.calendars);
        token = page.next_page_token;
      } while (token && cals.length < maxCalendars);
      truncated = !!token;
      show();
    } catch (err) {
      if (gen === generation) ctx.report(list, err);
    }
  }
  search.addEventListener('input', show);
  provider.addEventListener('change', load);
  ctx.onCleanup(() => { generation++; });
  load();
}

function isoLocal(d) {
  // datetime-local inputs take local time without a zone.
  const off = d.getTimezoneOffset() * 60000;
  return new Date(d.getTime() - off).toISOString().slice(0, 16);
}

function renderCalendar(root, id, ctx) {
  const head = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const sync = el('div', { class: 'panel', id: 'sync-state' });
  const notice = el('p', { class: 'notice', id: 'resync-notice' });
  const resync = el('button', { type: 'button', id: 'resync' }, 'Resync');
  const now = new Date();
  const from = el('input', { type: 'datetime-local', name: 'from', value: isoLocal(new Date(now.getTime() - 7 * 864e5)) });
  const to = el('input', { type: 'datetime-local', name: 'to', value: isoLocal(new Date(now.getTime() + 30 * 864e5)) });
  const deleted = el('input', { type: 'checkbox', name: 'deleted' });
  const events = el('div', { id: 'events' });
  let stopped = false, timer = null;
  replace(root, el('p', {}, link('← Calendars', 'calendars')), head,
    el('div', { class: 'split' },
      el('div', {}, el('h2', {}, 'Sync state'), sync, el('div', { class: 'toolbar' }, resync), notice),
      el('div', {}, el('h2', {}, 'Status history'), el('div', { id: 'status-history' }))),
    el('h2', {}, 'Events'),
    el('div', { class: 'toolbar' }, el('label', {}, 'From', from), el('label', {}, 'To', to),
      el('label', {}, deleted, 'include deleted'),
      el('button', { type: 'button', class: 'secondary', onclick: loadEvents }, 'Show')),
    events);

  async function loadCalendar() {
    try {
      const { calendar: c } = await api.get('/v1/calendars/' + encodeURIComponent(id));
      replace(head, el('h1', {}, c.email || c.provider_calendar_id || c.id),
        el('dl', { class: 'facts' },
          el('dt', {}, 'Calendar'), el('dd', { class: 'mono' }, c.id),
          el('dt', {}, 'Provider'), el('dd', {}, c.provider + (c.platform ? ' · ' + c.platform : '')),
          el('dt', {}, 'Provider calendar id'), el('dd', {}, c.provider_calendar_id),
          el('dt', {}, 'Status'), el('dd', {}, badge(c.status, 'CALENDAR_STATUS_')),
          el('dt', {}, 'Stored since'), el('dd', {}, fmtTime(c.create_time)),
          el('dt', {}, 'Last changed'), el('dd', {}, fmtTime(c.update_time))));
      replace(document.getElementById('status-history'),
        table(['Status', 'Time', 'Details'], [...(c.status_changes || [])].reverse().map((s) => el('tr', {},
          el('td', {}, badge(s.status, 'CALENDAR_STATUS_')), el('td', {}, fmtTime(s.time)),
          el('td', { class: 'wrap mono' }, s.details && Object.keys(s.details).length ? preview(s.details, 300) : '—'))),
        'No status change reported.'));
    } catch (err) { ctx.report(head, err); }
  }

  async function loadSync() {
    try {
      const s = await api.get('/v1/console/calendars/' + encodeURIComponent(id) + '/sync');
      if (stopped) return s;
      replace(sync,
        el('dl', { class: 'facts' },
          el('dt', {}, 'Watermark'), el('dd', { dataset: { field: 'watermark' } }, s.watermark ? fmtTime(s.watermark) : 'never'),
          el('dt', {}, 'Last full sync'), el('dd', { dataset: { field: 'last_full_sync' } }, s.last_full_sync ? fmtTime(s.last_full_sync) : 'never'),
          el('dt', {}, 'Last error'), el('dd', { class: s.last_error ? 'error' : '', dataset: { field: 'last_error' } },
            s.last_error ? [s.last_error, ' (delivery ', s.last_error_delivery_id, ')'] : 'none')),
        el('h2', {}, 'Latest deliveries'),
        table(['Delivery', 'Event type', 'State', 'Attempts', 'Received', 'Processed'], s.deliveries.map((d) => el('tr', { dataset: { deliveryId: d.id } },
          el('td', {}, d.id), el('td', {}, d.event_type || '—'), el('td', {}, badge(d.state, 'DELIVERY_STATE_')),
          el('td', {}, d.attempts), el('td', {}, fmtTime(d.receive_time)), el('td', {}, fmtTime(d.process_time)))),
        `None among the newest ${s.deliveries_searched} deliveries.`));
      return s;
    } catch (err) { ctx.report(sync, err); }
  }

  async function loadEvents() {
    replace(events, el('p', { class: 'muted' }, 'Loading…'));
    try {
      const all = [];
      let token = '';
      do {
        const page = await api.get('/v1/calendars/' + encodeURIComponent(id) + '/events', {
          start_time: from.value ? new Date(from.value).toISOString() : '',
          end_time: to.value ? new Date(to.value).toISOString() : '',
          include_deleted: deleted.checked, page_size: 1000, page_token: token,
        });
        all.push(...page.events);
        token = page.next_page_token;
      } while (token && all.length < 5000);
      replace(events, table(['Start', 'End', 'Title', 'Status', 'Meeting', 'Changed', ''],
        all.map((e) => el('tr', { dataset: { eventId: e.id } },
          el('td', {}, e.all_day ? e.start_date : fmtTime(e.start_time)),
          el('td', {}, e.all_day ? e.end_date : fmtTime(e.end_time)),
          el('td', { class: 'wrap event-title' }, e.title || '(no title)', e.deleted ? el('span', { class: 'state DELETED' }, 'deleted') : null),
          el('td', {}, badge(e.status, 'EVENT_STATUS_')),
          el('td', {}, e.meeting_platform || '—'),
          el('td', {}, fmtTime(e.update_time)),
          el('td', {}, link('history', 'history', e.id)))),
        'No event in this window.'));
    } catch (err) { ctx.report(events, err); }
  }

  resync.addEventListener('click', async () => {
    resync.disabled = true;
    notice.className = 'notice';
    try {
      const { delivery_id: did } = await api.post('/v1/calendars/' + encodeURIComponent(id) + ':resync');
      notice.textContent = `Resync queued as delivery ${did}; waiting for it…`;
      const deadline = Date.now() + 120000;
      const poll = async () => {
        const s = await loadSync();
        const d = s && s.deliveries.find((x) => x.id === did);
        if (d && d.state !== 'DELIVERY_STATE_PENDING') {
          notice.textContent = `Resync (delivery ${did}) finished: ${d.state.replace('DELIVERY_STATE_', '')}.`;
          resync.disabled = false;
          loadEvents();
          return;
        }
        if (stopped) return;
        if (Date.now() > deadline) {
          notice.textContent = `Resync (delivery ${did}) is still pending; see Deliveries.`;
          resync.disabled = false;
          return;
        }
        timer = setTimeout(poll, 1000);
      };
      poll();
    } catch (err) {
      notice.className = 'error';
      notice.textContent = 'Resync failed: ' + err.message;
      resync.disabled = false;
    }
  });
  ctx.onCleanup(() => { stopped = true; clearTimeout(timer); });
  loadCalendar();
  loadSync();
  loadEvents();
}
