// app.js is the console's shell: it routes #/page/args to a page module,
// asks for an API token when the server answers 401, and stops a page's
// timers and streams when another page opens.
import * as api from './api.js';
import { el, replace } from './dom.js';
import * as overview from './pages/overview.js';
import * as calendars from './pages/calendars.js';
import * as deliveries from './pages/deliveries.js';
import * as live from './pages/live.js';
import * as history from './pages/history.js';

const pages = { overview, calendars, deliveries, live, history };
const main = document.getElementById('page');
const tokenPanel = document.getElementById('token-panel');
const tokenForm = document.getElementById('token-form');
const tokenInput = document.getElementById('token-input');
const tokenError = document.getElementById('token-error');
const forget = document.getElementById('forget-token');

let cleanup = null;

function route() {
  const parts = (location.hash || '#/overview').replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const name = pages[parts[0]] ? parts[0] : 'overview';
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('active', a.dataset.page === name);
  }
  if (cleanup) { cleanup(); cleanup = null; }
  replace(main);
  document.title = 'calsync · ' + name;
  const ctx = {
    onCleanup(fn) { const prev = cleanup; cleanup = () => { fn(); if (prev) prev(); }; },
    // report shows a failed call on the page; a 401 also opens the token panel.
    report(target, err) {
      replace(target, el('p', { class: 'error', 'data-error': err.status || 'network' },
        err.status === 401 ? 'Not authorized: enter an API token above.' : 'Error: ' + err.message));
    },
  };
  pages[name].render(main, parts.slice(1), ctx);
}

window.addEventListener('calsync:unauthorized', (e) => {
  tokenPanel.hidden = false;
  tokenError.hidden = !api.token();
  tokenError.textContent = api.token() ? 'The server refused this token: ' + e.detail : '';
  tokenInput.focus();
});

tokenForm.addEventListener('submit', (e) => {
  e.preventDefault();
  api.setToken(tokenInput.value.trim());
  tokenInput.value = '';
  tokenPanel.hidden = true;
  forget.hidden = !api.token();
  route();
});

forget.addEventListener('click', () => {
  api.setToken('');
  forget.hidden = true;
  route();
});

forget.hidden = !api.token();
window.addEventListener('hashchange', route);
route();
