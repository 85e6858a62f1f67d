// The Live changes page: the WatchEvents stream as Server-Sent Events, read
// with fetch so the bearer token travels in a header. Its filters are
// WatchEvents' own. The last cursor seen (change or bookmark) is kept in
// sessionStorage with the filters and the rows shown, so a reload, a pause
// or a dropped connection resumes exactly where the page stopped: nothing
// missed, nothing twice.
import * as api from '../api.js';
import { el, replace, link, fmtTime, badge, preview, table } from '../dom.js';

const storeKey = 'calsync.live';
const maxRows = 200;
const changeTypes = ['CREATED', 'UPDATED', 'DELETED', 'CALENDAR_UPDATED'];
const providers = ['recall', 'postpress'];

function loadState() {
  try {
    const s = JSON.parse(sessionStorage.getItem(storeKey));
    if (s && typeof s === 'object') return { cursor: '', rows: [], paused: false, filters: {}, ...s };
  } catch { /* start afresh */ }
  return { cursor: '', rows: [], paused: false, filters: {} };
}

// summarize keeps what a row shows of a change, small enough to store.
export function summarize(ch, cursor) {
  const ev = ch.event || null, cal = ch.calendar || null;
  const prev = ch.previous_event || ch.previous_calendar || null;
  const cur = ev || cal || {};
  return {
    cursor, type: ch.type, time: ch.commit_time,
    calendar_id: ev ? ev.calendar_id : cal ? cal.id : '',
    event_id: ev ? ev.id : '', provider: cur.provider || '',
    title: ev ? ev.title : cal ? (cal.email || cal.provider_calendar_id) : '',
    changed: (ch.changed_fields || []).map((f) => ({
      field: f, new: preview(cur[f]), old: prev ? preview(prev[f]) : null,
    })),
  };
}

// changedList shows the fields an update changed, old → new when known.
export function changedList(changed) {
  if (!changed || !changed.length) return '';
  return el('ul', { class: 'fields' }, changed.map((c) => el('li', { dataset: { field: c.field } },
    el('code', {}, c.field), ': ',
    c.old !== null ? [el('span', { class: 'old' }, c.old), ' → '] : null,
    el('span', { class: 'new' }, c.new))));
}

export function render(root, _args, ctx) {
  const st = loadState();
  const f = { calendars: '', providers: [], types: [], previous: true, ...st.filters };
  const save = () => sessionStorage.setItem(storeKey, JSON.stringify(st));

  const calendars = el('input', { type: 'text', class: 'wide', name: 'calendars', placeholder: 'calendar ids (comma-separated), empty: all', value: f.calendars });
  const providerBoxes = providers.map((p) => el('input', { type: 'checkbox', name: 'provider', value: p, checked: f.providers.includes(p) }));
  const typeBoxes = changeTypes.map((t) => el('input', { type: 'checkbox', name: 'type', value: t, checked: f.types.includes(t) }));
  const previous = el('input', { type: 'checkbox', name: 'previous', checked: f.previous });
  const pause = el('button', { type: 'button', id: 'pause' });
  const fromNow = el('button', { type: 'button', class: 'secondary', id: 'from-now' }, 'Clear and start from now');
  const status = el('span', { class: 'status-line', id: 'live-status' });
  const cursorText = el('code', { id: 'live-cursor' });
  const rowsBox = el('div', { id: 'live-rows' });
  replace(root, el('h1', {}, 'Live changes'),
    el('div', { class: 'toolbar' }, el('label', {}, 'Calendars', calendars)),
    el('div', { class: 'toolbar' },
      el('span', {}, 'Providers:'), providers.map((p, i) => el('label', {}, providerBoxes[i], p)),
      el('span', {}, ' Types:'), changeTypes.map((t, i) => el('label', {}, typeBoxes[i], t.toLowerCase())),
      el('label', {}, previous, 'show previous values')),
    el('div', { class: 'toolbar' }, pause, fromNow, status),
    el('p', { class: 'muted' }, 'Resumes after cursor ', cursorText, ' — empty: from now. Newest first; the last ', String(maxRows), ' are kept.'),
    rowsBox);

  // session is the current connection attempt loop; aborting it ends the
  // loop, its stream and its retry wait.
  let session = null, fatal = null;

  function setStatus(kind, text) {
    status.className = 'status-line ' + kind;
    status.textContent = text;
  }
  function showCursor() { cursorText.textContent = st.cursor || '(none)'; }
  function showRows() {
    replace(rowsBox, table(['Committed', 'Type', 'Provider', 'Event / calendar', 'Changed fields', ''],
      st.rows.map((r) => el('tr', { dataset: { cursor: r.cursor || '', eventId: r.event_id, type: r.type } },
        el('td', {}, fmtTime(r.time)), el('td', {}, badge(r.type, 'CHANGE_TYPE_')), el('td', {}, r.provider),
        el('td', { class: 'wrap' }, el('div', { class: 'change-title' }, r.title || '(no title)'), el('div', { class: 'muted mono' }, r.event_id || r.calendar_id)),
        el('td', { class: 'wrap' }, changedList(r.changed)),
        el('td', {}, r.event_id ? link('history', 'history', r.event_id) : ''))),
      'No change yet: waiting for the next one.'));
  }

  function filters() {
    return {
      calendars: calendars.value.trim(),
      providers: providerBoxes.filter((b) => b.checked).map((b) => b.value),
      types: typeBoxes.filter((b) => b.checked).map((b) => b.value),
      previous: previous.checked,
    };
  }
  function query() {
    const q = st.filters;
    return {
      after_cursor: st.cursor,
      calendar_ids: q.calendars ? q.calendars.split(',').map((s) => s.trim()).filter(Boolean) : [],
      providers: q.providers, change_types: q.types.map((t) => 'CHANGE_TYPE_' + t),
      include_previous: q.previous,
    };
  }

  function onEvent(ev) {
    if (ev.event === 'change') {
      const ch = JSON.parse(ev.data);
      st.rows.unshift(summarize(ch, ev.id));
      if (st.rows.length > maxRows) st.rows.length = maxRows;
      if (ev.id) st.cursor = ev.id;
      save();
      showRows();
      showCursor();
    } else if (ev.event === 'bookmark') {
      if (ev.id) { st.cursor = ev.id; save(); showCursor(); }
    } else if (ev.event === 'error') {
      let s = {};
      try { s = JSON.parse(ev.data); } catch { /* keep empty */ }
      // OUT_OF_RANGE (compacted cursor) and INVALID_ARGUMENT cannot get
      // better by retrying; everything else resumes from the cursor.
      if (s.code === 11 || s.code === 3) fatal = s.message || 'stream refused';
      else setStatus('paused', 'Stream interrupted: ' + (s.message || 'error') + '; resuming…');
      return;
    }
    if (!fatal) setStatus('live', 'Live');
  }

  async function loop(sess) {
    let delay = 500;
    while (!sess.signal.aborted) {
      fatal = null;
      setStatus('paused', st.cursor ? 'Connecting (resuming after the last cursor)…' : 'Connecting…');
      try {
        await api.watch(query(), (ev) => { if (!sess.signal.aborted) onEvent(ev); }, sess.signal);
        delay = 500;
      } catch (err) {
        if (sess.signal.aborted) return;
        if (err.status === 401) { setStatus('failed', 'Not authorized: enter an API token above.'); return; }
        if (err.status === 410 || err.status === 400) fatal = err.message;
        else setStatus('paused', 'Disconnected (' + err.message + '); retrying…');
      }
      if (fatal) { setStatus('failed', 'Stopped: ' + fatal + ' — use "Clear and start from now".'); return; }
      await new Promise((resolve) => {
        const t = setTimeout(resolve, delay);
        sess.signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
      });
      delay = Math.min(delay * 2, 10000);
    }
  }

  function stop() { if (session) session.abort(); session = null; }
  function restart() {
    stop();
    if (st.paused) return;
    session = new AbortController();
    loop(session);
  }
  function showPause() { pause.textContent = st.paused ? 'Resume' : 'Pause'; if (st.paused) setStatus('paused', 'Paused'); }

  pause.addEventListener('click', () => {
    st.paused = !st.paused;
    save();
    showPause();
    if (st.paused) stop(); else restart();
  });
  fromNow.addEventListener('click', () => {
    st.cursor = ''; st.rows = []; save(); showRows(); showCursor(); restart();
  });
  for (const input of [calendars, previous, ...providerBoxes, ...typeBoxes]) {
    input.addEventListener('change', () => { st.filters = filters(); save(); restart(); });
  }
  st.filters = filters();
  save();
  showRows();
  showCursor();
  showPause();
  ctx.onCleanup(stop);
  restart();
}
