// console_e2e.mjs drives the operator console in headless chromium for
// TestConsoleInBrowser (console_e2e_test.go), which passes its settings in
// CONSOLE_E2E and takes server-side steps when this script POSTs to
// CONSOLE_E2E_CONTROL/<action>. It prints one JSON object of observations on
// stdout; the Go test asserts on them. Logs go to stderr.
import { createRequire } from 'node:module';
import { join } from 'node:path';

const cfg = JSON.parse(process.env.CONSOLE_E2E);
const controlURL = process.env.CONSOLE_E2E_CONTROL;
const require = createRequire(import.meta.url);
const { chromium } = require(cfg.playwright);

const log = (...a) => console.error(new Date().toISOString(), ...a);
const results = { screenshots: [] };

async function control(action) {
  log('control', action);
  const resp = await fetch(controlURL + '/' + action, { method: 'POST' });
  if (!resp.ok) throw new Error(`control ${action}: ${resp.status}`);
  return resp.json();
}

async function shot(page, name) {
  const file = `console-${name}.png`;
  await page.screenshot({ path: join(cfg.shots, file), fullPage: true });
  results.screenshots.push(file);
}

// One browser for every scenario, each in a context of its own; Playwright
// gives the browser a fresh temporary profile (user-data-dir) per launch.
const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
context.setDefaultTimeout(30000);

try {
  await consoleScenarios();
  await corsScenario();
  await mutualTLSScenario();
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));

async function consoleScenarios() {
  const page = await context.newPage();
  let dialogs = 0, unauthorized = false, urlsWithToken = 0;
  page.on('dialog', async (d) => { dialogs++; log('dialog!', d.message()); await d.dismiss(); });
  page.on('console', (m) => log('page:', m.type(), m.text()));
  page.on('pageerror', (e) => log('page error:', e.message));
  page.on('request', (r) => { if (r.url().includes(cfg.token)) urlsWithToken++; });
  page.on('response', (r) => { if (r.status() === 401 && r.url().includes('/v1/')) unauthorized = true; });

  // Without a token the page refuses to show data and asks for one.
  const cspResp = await page.goto(cfg.console + '#/calendars');
  await page.locator('#token-panel').waitFor({ state: 'visible' });
  await page.locator('[data-error="401"]').waitFor();
  results.token = {
    panelShown: await page.locator('#token-panel').isVisible(),
    rowsWithout: await page.locator('tr[data-calendar-id]').count(),
    unauthorized,
  };
  await shot(page, 'token');
  await page.fill('#token-input', cfg.token);
  await page.click('#token-form button[type=submit]');
  await page.locator(`tr[data-calendar-id="${cfg.recallCalendar}"]`).waitFor();
  results.token.rowsWithToken = await page.locator('tr[data-calendar-id]').count();
  results.token.tokenStored = (await page.evaluate(() => sessionStorage.getItem('calsync.token'))) === cfg.token;
  await page.fill('input[name=q]', 'rooms@');
  await page.locator('tr[data-calendar-id]').first().waitFor();
  await page.fill('input[name=q]', '');
  await shot(page, 'calendars');

  // An event titled with markup shows as text and runs nothing.
  await page.goto(cfg.console + '#/calendars/' + cfg.postpressCalendar);
  const title = page.locator(`tr[data-event-id="${cfg.xssEvent}"] .event-title`);
  await title.waitFor();
  results.xss = {
    csp: cspResp.headers()['content-security-policy'] || '',
    eventTitle: (await title.textContent()).replace(/deleted$/, ''),
    visible: await page.getByText(cfg.xssTitle, { exact: true }).isVisible(),
  };
  await page.goto(cfg.console + '#/history/' + cfg.xssEvent);
  await page.locator('tr[data-type]').first().waitFor();
  results.xss.historyTitle = await page.locator('tr[data-type] .history-title').first().textContent();
  results.xss.images = await page.evaluate(() => document.querySelectorAll('main img').length);

  // Resync shows the calendar's new sync state.
  await page.goto(cfg.console + '#/calendars/' + cfg.recallCalendar);
  const fullSync = page.locator('[data-field=last_full_sync]');
  await fullSync.waitFor();
  results.resync = { before: await fullSync.textContent() };
  await page.click('#resync');
  await page.waitForFunction(() => /finished/.test(document.getElementById('resync-notice').textContent));
  await page.waitForFunction(() => document.querySelector('[data-field=last_full_sync]').textContent !== 'never');
  results.resync.after = await fullSync.textContent();
  results.resync.notice = await page.locator('#resync-notice').textContent();
  await page.locator('tr[data-event-id]').first().waitFor();
  await shot(page, 'calendar');

  // A dead letter is retried from the page and reaches DONE.
  await page.goto(cfg.console + '#/deliveries');
  const row = (state) => page.locator(`tr[data-delivery-id="${cfg.deadDelivery}"][data-state="${state}"]`);
  await row('DELIVERY_STATE_DEAD').waitFor();
  results.retry = { before: await page.locator(`tr[data-delivery-id="${cfg.deadDelivery}"]`).getAttribute('data-state') };
  await shot(page, 'deliveries');
  await row('DELIVERY_STATE_DEAD').locator('button.retry').click();
  await row('DELIVERY_STATE_DONE').waitFor();
  results.retry.after = await page.locator(`tr[data-delivery-id="${cfg.deadDelivery}"]`).getAttribute('data-state');
  results.retry.notice = await page.locator('#delivery-notice').textContent();

  // Live changes: a webhook shows without a reload; updates show their
  // changed fields; a paused page shows nothing until resumed; a reload
  // resumes from the last cursor.
  await page.goto(cfg.console + '#/live');
  await page.waitForFunction(() => document.getElementById('live-status').textContent === 'Live');
  const created = await control('live-create');
  const liveRow = (type) => page.locator(`tr[data-event-id="${created.event}"][data-type="${type}"]`);
  await liveRow('CHANGE_TYPE_CREATED').waitFor();
  results.live = { createdShown: true };
  await control('live-update');
  const upd = liveRow('CHANGE_TYPE_UPDATED');
  await upd.waitFor();
  results.live.updatedFields = await upd.locator('ul.fields li').evaluateAll((lis) => lis.map((li) => li.dataset.field));
  results.live.updatedOld = await upd.locator('li[data-field=title] .old').textContent();
  results.live.updatedNew = await upd.locator('li[data-field=title] .new').textContent();

  await page.click('#pause');
  await page.waitForFunction(() => document.getElementById('live-status').textContent === 'Paused');
  const whilePaused = await control('live-create');
  results.live.pausedShown = await page.locator(`tr[data-event-id="${whilePaused.event}"]`).count() > 0;
  await shot(page, 'live');
  await page.click('#pause');
  await page.locator(`tr[data-event-id="${whilePaused.event}"]`).waitFor();
  results.live.resumedShown = true;

  // Leave the page (its stream ends), commit a change, then come back with
  // a reload: the change must show, once, with the earlier rows.
  await page.goto(cfg.console + '#/overview');
  const meanwhile = await control('live-create');
  await page.goto(cfg.console + '#/live');
  await page.reload();
  await page.locator(`tr[data-event-id="${meanwhile.event}"]`).waitFor();
  results.live.reloadShown = true;
  results.live.keptOldRows = await page.locator(`tr[data-event-id="${created.event}"]`).count() === 2;
  const cursors = await page.locator('#live-rows tr[data-cursor]').evaluateAll((trs) => trs.map((tr) => tr.dataset.cursor));
  results.live.rowsAfter = cursors.length;
  results.live.distinctCursors = new Set(cursors).size;

  // The event's history, oldest first, with the fields each update changed.
  await page.goto(cfg.console + '#/history/' + created.event);
  await page.locator('#history tr[data-type]').nth(1).waitFor();
  results.history = {
    types: await page.locator('#history tr[data-type]').evaluateAll((trs) => trs.map((tr) => tr.dataset.type)),
    changed: await page.locator('#history tr[data-type]').evaluateAll((trs) => trs.map((tr) =>
      [...tr.querySelectorAll('li[data-field]')].map((li) => li.dataset.field).join(','))),
  };
  await shot(page, 'history');

  // The overview, from the metrics' registry.
  await page.goto(cfg.console + '#/overview');
  const accepted = page.locator('tr[data-provider=postpress] td[data-outcome=accepted]');
  await accepted.waitFor();
  await page.waitForFunction(() => document.querySelector('[data-metric=inbox_dead] .value').textContent === '0');
  results.overview = {
    postpressAccepted: await accepted.textContent(),
    dead: await page.locator('[data-metric=inbox_dead] .value').textContent(),
  };
  await shot(page, 'overview');
  results.token.urlsWithToken = urlsWithToken;
  results.token.cookieCount = (await context.cookies()).length;
  results.xss.dialogs = dialogs;
  await page.close();
}

// openEventSource opens an EventSource on calsync's SSE stream from a page
// of another origin and records what it receives.
async function openEventSource(origin) {
  const page = await context.newPage();
  page.on('console', (m) => log(origin, 'page:', m.type(), m.text()));
  await page.goto(origin + '/');
  await page.evaluate((url) => {
    window.got = [];
    window.opens = [];
    const es = new EventSource(url);
    window.es = es;
    es.onopen = () => window.opens.push(Date.now());
    for (const type of ['change', 'bookmark']) {
      es.addEventListener(type, (e) => window.got.push({ type, id: e.lastEventId, data: e.data, at: Date.now() }));
    }
  }, cfg.corsServer + '/v1/events:watch?change_types=CHANGE_TYPE_CREATED');
  return page;
}

async function corsScenario() {
  const allowed = await openEventSource(cfg.allowedOrigin);
  const denied = await openEventSource(cfg.deniedOrigin);
  // The console's own Live page on the same server reconnects by itself
  // (fetch, resuming from its last cursor) across the restart.
  const consolePage = await context.newPage();
  await consolePage.goto(cfg.corsServer + '/ui/#/live');
  await consolePage.waitForFunction(() => document.getElementById('live-status').textContent === 'Live');
  // The denied origin's stream fails at once and stays closed.
  await denied.waitForFunction(() => window.es.readyState === 2);
  await allowed.waitForFunction(() => window.got.some((e) => e.type === 'bookmark'));
  const count = () => allowed.evaluate(() => window.got.filter((e) => e.type === 'change').length);

  await control('cors-post');
  await allowed.waitForFunction(() => window.got.filter((e) => e.type === 'change').length === 3);
  const restarted = await control('cors-restart');
  await allowed.waitForFunction(() => window.got.filter((e) => e.type === 'change').length === 6, null, { timeout: 60000 });
  await control('cors-post');
  await allowed.waitForFunction(() => window.got.filter((e) => e.type === 'change').length === 9);
  log('cross-origin changes:', await count());
  const created = consolePage.locator('#live-rows tr[data-type="CHANGE_TYPE_CREATED"]');
  await consolePage.waitForFunction(() => document.querySelectorAll('#live-rows tr[data-type="CHANGE_TYPE_CREATED"]').length >= 9);
  const consoleCursors = await consolePage.locator('#live-rows tr[data-cursor]').evaluateAll((trs) => trs.map((tr) => tr.dataset.cursor));
  const consoleCreated = await created.evaluateAll((trs) => trs.map((tr) => tr.dataset.eventId).reverse());
  await consolePage.close();
  results.cors = {
    events: await allowed.evaluate(() => window.got),
    opens: await allowed.evaluate(() => window.opens),
    deniedEvents: await denied.evaluate(() => window.got.length),
    deniedState: await denied.evaluate(() => window.es.readyState),
    restartCommittedAt: restarted.committedAt,
    consoleCreated,
    consoleRows: consoleCursors.length,
    consoleDistinctCursors: new Set(consoleCursors).size,
  };
  await allowed.close();
  await denied.close();
}

// mutualTLSScenario: with mutual TLS and no tokens, the console works with
// the browser's client certificate, and shows no data without one.
async function mutualTLSScenario() {
  const open = async (options) => {
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true, ...options });
    ctx.setDefaultTimeout(30000);
    const page = await ctx.newPage();
    page.on('console', (m) => log('mtls page:', m.type(), m.text()));
    await page.goto(cfg.mtlsConsole + '#/calendars');
    return { ctx, page };
  };
  const withCert = await open({
    clientCertificates: [{ origin: cfg.mtlsOrigin, certPath: cfg.clientCert, keyPath: cfg.clientKey }],
  });
  await withCert.page.locator('tr[data-calendar-id]').first().waitFor();
  results.mtls = {
    rowsWithCert: await withCert.page.locator('tr[data-calendar-id]').count(),
    tokenPanelWithCert: await withCert.page.locator('#token-panel').isVisible(),
  };
  await withCert.ctx.close();
  const without = await open({});
  await without.page.locator('[data-error="401"]').waitFor();
  results.mtls.rowsWithout = await without.page.locator('tr[data-calendar-id]').count();
  await without.ctx.close();
}
