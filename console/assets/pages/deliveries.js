// The Deliveries page: the webhook inbox, filtered by state and provider,
// with attempts, last error and times (never a body or a credential: the
// API does not return them), and Retry on dead letters. It refreshes every
// two seconds while "auto-refresh" is on.
import * as api from '../api.js';
import { el, replace, fmtTime, badge, table } from '../dom.js';

const refreshMs = 2000;
const states = ['PENDING', 'DONE', 'IGNORED', 'DEAD'];

export function render(root, _args, ctx) {
  const state = el('select', { name: 'state' }, el('option', { value: '' }, 'every state'),
    states.map((s) => el('option', { value: 'DELIVERY_STATE_' + s }, s)));
  const provider = el('select', { name: 'provider' }, el('option', { value: '' }, 'every provider'),
    el('option', { value: 'recall' }, 'recall'), el('option', { value: 'postpress' }, 'postpress'));
  const auto = el('input', { type: 'checkbox', name: 'auto', checked: true });
  const notice = el('p', { class: 'notice', id: 'delivery-notice' });
  const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const more = el('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  let pages = 1, nextToken = '', timer = null, stopped = false, generation = 0;
  replace(root, el('h1', {}, 'Deliveries'),
    el('div', { class: 'toolbar' }, el('label', {}, 'State', state), el('label', {}, 'Provider', provider),
      el('label', {}, auto, 'auto-refresh'),
      el('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh')),
    notice, list, more);

  async function retry(id, button) {
    button.disabled = true;
    try {
      const { delivery } = await api.post('/v1/deliveries/' + encodeURIComponent(id) + ':retry');
      notice.className = 'notice';
      notice.textContent = `Delivery ${delivery.id} queued again.`;
    } catch (err) {
      notice.className = 'error';
      notice.textContent = `Retry of delivery ${id} failed: ${err.message}`;
    }
    load();
  }

  function row(d) {
    const dead = d.state === 'DELIVERY_STATE_DEAD';
    const button = dead ? el('button', { type: 'button', class: 'retry' }, 'Retry') : null;
    if (button) button.addEventListener('click', () => retry(d.id, button));
    return el('tr', { dataset: { deliveryId: d.id, state: d.state } },
      el('td', {}, d.id), el('td', {}, d.provider), el('td', {}, d.event_type || '—'),
      el('td', { class: 'state-cell' }, badge(d.state, 'DELIVERY_STATE_')), el('td', {}, d.attempts),
      el('td', { class: 'wrap error' }, d.last_error || ''),
      el('td', {}, fmtTime(d.receive_time)), el('td', {}, fmtTime(d.process_time)),
      el('td', {}, d.state === 'DELIVERY_STATE_PENDING' ? fmtTime(d.next_attempt_time) : '—'),
      el('td', {}, button));
  }

  async function load() {
    clearTimeout(timer);
    const gen = ++generation;
    try {
      const all = [];
      let token = '';
      for (let i = 0; i < pages; i++) {
        const page = await api.get('/v1/deliveries', { state: state.value, provider: provider.value, page_size: 100, page_token: token });
        all.push(...page.deliveries);
        token = page.next_page_token;
        if (!token) break;
      }
      if (gen !== generation || stopped) return;
      nextToken = token;
      more.hidden = !nextToken;
      replace(list, table(['Id', 'Provider', 'Event type', 'State', 'Attempts', 'Last error', 'Received', 'Processed', 'Next attempt', ''],
        all.map(row), 'No delivery matches.'));
    } catch (err) {
      if (gen !== generation || stopped) return;
      ctx.report(list, err);
      if (err.status === 401) return;
    }
    if (auto.checked && !stopped) timer = setTimeout(load, refreshMs);
  }
  state.addEventListener('change', () => { pages = 1; load(); });
  provider.addEventListener('change', () => { pages = 1; load(); });
  auto.addEventListener('change', () => load());
  more.addEventListener('click', () => { pages++; load(); });
  ctx.onCleanup(() => { stopped = true; clearTimeout(timer); });
  load();
}
