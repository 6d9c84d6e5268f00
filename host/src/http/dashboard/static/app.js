// wasmq dashboard: a hash-routed page over the host's API. Every figure comes from the API:
// `/dashboard/api/summary` (all queues, one request per refresh), `/queues/{queue}` and
// `/dashboard/api/queues/{queue}` (one queue), `/dashboard/api/components`; every action is
// the API's own route (pause, resume, purge, replay, peek, reload).
'use strict';

(() => {
  const TOKEN_KEY = 'wasmq.api-token';
  const MAX_ROWS = 1000;
  const SPARK_POINTS = 60;
  const SERIES = [
    ['sent', 'sent'],
    ['acked', 'acked'],
    ['retried', 'retried'],
    ['dead_lettered', 'dead-lettered'],
  ];

  let refreshMs = 2000;
  let page = null;
  let timer = null;

  // ---- DOM helpers (text is always set as text, never parsed as HTML) ----

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    node.append(...children);
    return node;
  }

  const $ = (id) => document.getElementById(id);

  // ---- formatting ----

  const int = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en'));

  function rate(r) {
    if (r === null || r === undefined) return '–';
    if (r === 0) return '0';
    return r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString('en');
  }

  function age(ms) {
    if (ms === null || ms === undefined) return '–';
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function bytes(n) {
    if (n < 1000) return `${n} B`;
    if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
    if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
    return `${(n / 1e9).toFixed(1)} GB`;
  }

  const seconds = (s) => (s === null || s === undefined ? '–' : s < 1 ? `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms` : `${s.toFixed(2)} s`);
  const when = (ms) => new Date(ms).toLocaleString('en-GB');

  // ---- the API ----

  class Unauthorized extends Error {}

  async function api(method, path, body) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
    if (response.status === 401) {
      askToken(token ? 'The host refused this token.' : null);
      throw new Unauthorized('unauthorized');
    }
    let payload;
    try {
      payload = await response.json();
    } catch {
      throw new Error(`${response.status} ${response.statusText}`);
    }
    if (!payload.success) {
      const error = (payload.errors || [])[0];
      throw new Error(error ? `${error.code}: ${error.message}` : `HTTP ${response.status}`);
    }
    return payload.result;
  }

  // ---- the token prompt ----

  function askToken(message) {
    clearTimeout(timer);
    page = null;
    $('main').replaceChildren();
    $('token-prompt').hidden = false;
    $('forget-token').hidden = true;
    $('token-error').hidden = !message;
    $('token-error').textContent = message || '';
    $('token-input').focus();
    setStatus('');
  }

  function tokenEntered(event) {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token-input').value = '';
    $('token-prompt').hidden = true;
    route();
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    askToken(null);
  }

  // ---- refreshing ----

  function setStatus(text, isError) {
    const status = $('status');
    status.textContent = text;
    status.classList.toggle('error', Boolean(isError));
  }

  async function refresh() {
    clearTimeout(timer);
    const current = page;
    if (!current) return;
    try {
      await current.load();
      if (page !== current) return;
      setStatus(`updated ${new Date().toLocaleTimeString('en-GB')}`);
      $('forget-token').hidden = !sessionStorage.getItem(TOKEN_KEY);
    } catch (error) {
      if (error instanceof Unauthorized) return;
      if (page === current) setStatus(String(error.message || error), true);
    }
    if (page === current && current.live && !document.hidden) {
      timer = setTimeout(refresh, refreshMs);
    }
  }

  function route() {
    clearTimeout(timer);
    $('token-prompt').hidden = true;
    const hash = location.hash || '#/';
    const main = $('main');
    main.replaceChildren();
    for (const link of document.querySelectorAll('nav a')) link.classList.remove('active');
    if (hash.startsWith('#/queue/')) {
      page = queuePage(main, decodeURIComponent(hash.slice('#/queue/'.length)));
      $('nav-queues').classList.add('active');
    } else if (hash === '#/components') {
      page = componentsPage(main);
      $('nav-components').classList.add('active');
    } else {
      page = queuesPage(main);
      $('nav-queues').classList.add('active');
    }
    refresh();
  }

  // ---- charts (inline SVG) ----

  /** A line chart of `history` (the API's rates over time) over the last `windowS` seconds. */
  function chart(history, windowS, className) {
    const width = 720;
    const height = 160;
    const pad = { left: 44, right: 8, top: 8, bottom: 18 };
    const now = history.at_ms.length ? history.at_ms[history.at_ms.length - 1] : Date.now();
    const start = now - windowS * 1000;
    let max = 0;
    for (const [key] of SERIES) for (const v of history[key] || []) if (v !== null && v > max) max = v;
    max = niceCeil(max);
    const x = (t) => pad.left + ((t - start) / (windowS * 1000)) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
    const root = svg('svg', {
      viewBox: `0 0 ${width} ${height}`,
      class: `chart ${className || ''}`,
      role: 'img',
      'aria-label': 'messages per second over the last minutes',
    });
    for (const fraction of [0, 0.5, 1]) {
      const v = max * fraction;
      root.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: 'grid' }));
      const label = svg('text', { x: pad.left - 4, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' });
      label.textContent = rate(v);
      root.append(label);
    }
    for (const [text, t] of [[`−${Math.round(windowS / 60)} min`, start], ['now', now]]) {
      const label = svg('text', { x: x(t), y: height - 4, class: 'axis', 'text-anchor': t === now ? 'end' : 'start' });
      label.textContent = text;
      root.append(label);
    }
    for (const [key] of SERIES) {
      for (const points of segments(history.at_ms, history[key] || [], start)) {
        root.append(svg('polyline', {
          class: `line ${key}`,
          points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
        }));
      }
    }
    return root;
  }

  /** Runs of known values (a `null` rate breaks the line). */
  function segments(times, values, start) {
    const runs = [];
    let run = [];
    times.forEach((t, i) => {
      const v = values[i];
      if (v === null || v === undefined || t < start) {
        if (run.length) runs.push(run);
        run = [];
      } else {
        run.push([t, v]);
      }
    });
    if (run.length) runs.push(run);
    return runs.map((r) => (r.length === 1 ? [r[0], [r[0][0] + 1, r[0][1]]] : r));
  }

  function niceCeil(v) {
    if (v <= 1) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function legend() {
    return el('ul', { class: 'legend' }, SERIES.map(([key, label]) => el('li', { class: key }, `${label}/s`)));
  }

  /** A row's sparkline: sent and acked per second over the summaries this page received. */
  function sparkline(points) {
    const width = 90;
    const height = 20;
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'spark', 'aria-hidden': 'true' });
    if (points.length < 2) return root;
    let max = 1;
    for (const p of points) max = Math.max(max, p.sent || 0, p.acked || 0);
    for (const key of ['sent', 'acked']) {
      const coords = points.map((p, i) => {
        const px = (i / (SPARK_POINTS - 1)) * width + (SPARK_POINTS - points.length) * (width / (SPARK_POINTS - 1));
        const py = height - 1 - ((p[key] || 0) / max) * (height - 2);
        return `${px.toFixed(1)},${py.toFixed(1)}`;
      });
      root.append(svg('polyline', { class: `line ${key}`, points: coords.join(' ') }));
    }
    return root;
  }

  function card(label, value, id) {
    return el('div', { class: 'card', id }, el('span', { class: 'label' }, label), el('span', { class: 'value' }, value));
  }

  // ---- the queues page ----

  const COLUMNS = [
    ['name', 'Queue', (q) => q.name],
    ['consumer', 'Consumer', (q) => q.consumer || (q.pull ? 'http pull' : '')],
    ['backlog', 'Backlog', (q) => q.backlog],
    ['in_flight', 'In flight', (q) => q.in_flight],
    ['delayed', 'Delayed', (q) => q.delayed],
    ['oldest', 'Oldest', (q) => q.oldest_age_ms ?? -1],
    ['state', 'State', (q) => (q.paused ? 1 : 0)],
    ['sent', 'Sent/s', (q) => q.rates.sent ?? -1],
    ['acked', 'Acked/s', (q) => q.rates.acked ?? -1],
    ['retried', 'Retried/s', (q) => q.rates.retried ?? -1],
    ['dead_lettered', 'DLQ/s', (q) => q.rates.dead_lettered ?? -1],
  ];

  function queuesPage(main) {
    const sparks = new Map();
    let last = null;
    let sort = { key: 'name', descending: false };

    const filter = el('input', {
      id: 'filter',
      type: 'search',
      placeholder: 'Filter queues by name or consumer',
      'aria-label': 'Filter queues',
      oninput: () => last && renderRows(),
    });
    const headRow = el('tr', {}, COLUMNS.map(([key, label]) => el('th', {
      'data-key': key,
      class: ['name', 'consumer', 'state'].includes(key) ? '' : 'num',
      onclick: () => {
        sort = { key, descending: sort.key === key ? !sort.descending : key !== 'name' };
        renderRows();
      },
    }, label)), el('th', {}, 'Last minutes'));
    const body = el('tbody', { id: 'queue-rows' });
    const note = el('p', { id: 'rows-note', class: 'note' });
    const cards = el('div', { class: 'cards', id: 'totals' });
    const chartBox = el('div', { class: 'chart-box', id: 'totals-chart' });
    main.append(
      el('h1', {}, 'Queues'),
      cards,
      el('section', { class: 'panel' }, el('h2', {}, 'Messages per second, all queues'), chartBox, legend()),
      el('div', { class: 'toolbar' }, filter, note),
      el('table', { class: 'queues' }, el('thead', {}, headRow), body),
    );

    function renderRows() {
      const needle = filter.value.trim().toLowerCase();
      let rows = last.queues.filter((q) => !needle || q.name.includes(needle) || (q.consumer || '').toLowerCase().includes(needle));
      const matching = rows.length;
      const column = COLUMNS.find(([key]) => key === sort.key) || COLUMNS[0];
      rows = rows.slice().sort((a, b) => {
        const va = column[2](a);
        const vb = column[2](b);
        const order = va < vb ? -1 : va > vb ? 1 : a.name < b.name ? -1 : 1;
        return sort.descending ? -order : order;
      });
      const shown = rows.slice(0, MAX_ROWS);
      body.replaceChildren(...shown.map((q) => el('tr', { 'data-queue': q.name, class: q.paused ? 'paused' : '' },
        el('td', { class: 'name' }, el('a', { href: `#/queue/${encodeURIComponent(q.name)}` }, q.name)),
        el('td', { class: 'consumer' }, q.consumer || (q.pull ? 'http pull' : '–')),
        el('td', { class: 'num backlog' }, int(q.backlog)),
        el('td', { class: 'num in-flight' }, int(q.in_flight)),
        el('td', { class: 'num delayed' }, int(q.delayed)),
        el('td', { class: 'num oldest' }, age(q.oldest_age_ms)),
        el('td', { class: 'state' }, q.paused ? el('span', { class: 'badge paused' }, 'paused') : 'active'),
        el('td', { class: 'num rate-sent' }, rate(q.rates.sent)),
        el('td', { class: 'num rate-acked' }, rate(q.rates.acked)),
        el('td', { class: 'num rate-retried' }, rate(q.rates.retried)),
        el('td', { class: 'num rate-dead-lettered' }, rate(q.rates.dead_lettered)),
        el('td', { class: 'spark-cell' }, sparkline(sparks.get(q.name) || [])),
      )));
      for (const th of headRow.children) {
        th.classList.toggle('sorted', th.dataset.key === sort.key);
        th.classList.toggle('descending', th.dataset.key === sort.key && sort.descending);
      }
      note.textContent = matching > shown.length
        ? `showing ${shown.length} of ${matching} matching queues (${last.queues.length} in all): narrow the filter`
        : `${matching} of ${last.queues.length} queues`;
    }

    return {
      live: true,
      async load() {
        const summary = await api('GET', '/dashboard/api/summary');
        refreshMs = summary.refresh_ms || refreshMs;
        if (last && summary.at_ms === last.at_ms) return;
        last = summary;
        const seen = new Set();
        for (const q of summary.queues) {
          seen.add(q.name);
          const points = sparks.get(q.name) || [];
          points.push({ sent: q.rates.sent, acked: q.rates.acked });
          if (points.length > SPARK_POINTS) points.shift();
          sparks.set(q.name, points);
        }
        for (const name of sparks.keys()) if (!seen.has(name)) sparks.delete(name);
        const t = summary.totals;
        const r = t.rates || {};
        cards.replaceChildren(
          card('Queues', `${int(t.queues)}${t.paused ? ` (${t.paused} paused)` : ''}`),
          card('Backlog', int(t.backlog), 'total-backlog'),
          card('In flight', int(t.in_flight)),
          card('Delayed', int(t.delayed)),
          card('Sent/s', rate(r.sent)),
          card('Acked/s', rate(r.acked)),
          card('Retried/s', rate(r.retried)),
          card('Dead-lettered/s', rate(r.dead_lettered)),
        );
        chartBox.replaceChildren(chart(summary.history, summary.window_seconds));
        renderRows();
      },
    };
  }

  // ---- one queue ----

  function queuePage(main, name) {
    const path = `/queues/${encodeURIComponent(name)}`;
    let info = null;
    let detail = null;

    const result = el('p', { id: 'action-result', class: 'result', role: 'status' });
    const pause = el('button', { type: 'button', id: 'pause', onclick: () => act(`Paused ${name}.`, () => api('POST', `${path}/pause`)) }, 'Pause delivery');
    const resume = el('button', { type: 'button', id: 'resume', onclick: () => act(`Resumed ${name}.`, () => api('POST', `${path}/resume`)) }, 'Resume delivery');
    const replayFromDlq = el('button', { type: 'button', id: 'replay-dlq', hidden: true, onclick: () => replay(info.settings.consumer.dead_letter_queue, name) }, 'Replay');
    const replayTo = el('span', { id: 'replay-to' });
    const purge = el('button', { type: 'button', id: 'purge', class: 'danger', onclick: () => openPurge() }, 'Purge…');
    const badge = el('span', { id: 'queue-state', class: 'badge' });

    const confirmInput = el('input', {
      id: 'purge-confirm',
      type: 'text',
      autocomplete: 'off',
      spellcheck: 'false',
      'aria-label': 'Type the queue name to confirm',
      oninput: () => { purgeGo.disabled = confirmInput.value !== name; },
    });
    const purgeGo = el('button', { type: 'button', id: 'purge-go', class: 'danger', disabled: true, onclick: () => doPurge() }, 'Purge every message');
    const dialog = el('dialog', { id: 'purge-dialog' },
      el('h2', {}, `Purge ${name}?`),
      el('p', {}, 'Every message of this queue is deleted: waiting, delayed and in flight. This cannot be undone.'),
      el('label', { for: 'purge-confirm' }, 'Type ', el('strong', {}, name), ' to confirm'),
      confirmInput,
      el('div', { class: 'buttons' },
        el('button', { type: 'button', id: 'purge-cancel', onclick: () => dialog.close() }, 'Cancel'),
        purgeGo),
    );

    const peekLimit = el('input', { id: 'peek-limit', type: 'number', min: 1, max: 100, value: 10, 'aria-label': 'Messages to peek' });
    const peekList = el('div', { id: 'peek-results' });
    const peekButton = el('button', { type: 'button', id: 'peek', onclick: () => peek() }, 'Peek');

    const cards = el('div', { class: 'cards', id: 'queue-cards' });
    const chartBox = el('div', { class: 'chart-box', id: 'queue-chart' });
    const settings = el('div', { id: 'queue-settings' });
    const consumer = el('div', { id: 'queue-consumer' });

    main.append(
      el('p', { class: 'crumbs' }, el('a', { href: '#/' }, '← all queues')),
      el('div', { class: 'title' }, el('h1', { id: 'queue-name' }, name), badge),
      el('div', { class: 'actions' }, pause, resume, replayFromDlq, replayTo, purge),
      result,
      cards,
      el('section', { class: 'panel' }, el('h2', {}, 'Messages per second'), chartBox, legend()),
      el('div', { class: 'columns' },
        el('section', { class: 'panel' }, el('h2', {}, 'Settings'), settings),
        el('section', { class: 'panel' }, el('h2', {}, 'Consumer'), consumer)),
      el('section', { class: 'panel' },
        el('h2', {}, 'Messages'),
        el('div', { class: 'toolbar' }, el('label', { for: 'peek-limit' }, 'Peek at the first '), peekLimit, el('span', {}, ' waiting messages (nothing is leased) '), peekButton),
        peekList),
      dialog,
    );

    async function act(done, call) {
      result.textContent = '';
      result.classList.remove('error');
      for (const button of main.querySelectorAll('.actions button')) button.disabled = true;
      try {
        const answer = await call();
        result.textContent = typeof done === 'function' ? done(answer) : done;
      } catch (error) {
        if (error instanceof Unauthorized) return;
        result.textContent = String(error.message || error);
        result.classList.add('error');
      } finally {
        for (const button of main.querySelectorAll('.actions button')) button.disabled = false;
      }
      await refresh();
    }

    function replay(from, to) {
      return act((answer) => `Moved ${int(answer.moved)} message${answer.moved === 1 ? '' : 's'} from ${from} to ${to}.${answer.moved >= 10000 ? ' More may be waiting: replay again.' : ''}`,
        () => api('POST', `/queues/${encodeURIComponent(from)}/replay`, { to }));
    }

    function openPurge() {
      confirmInput.value = '';
      purgeGo.disabled = true;
      dialog.showModal();
      confirmInput.focus();
    }

    function doPurge() {
      if (confirmInput.value !== name) return;
      dialog.close();
      act((answer) => `Purged ${int(answer.purged)} message${answer.purged === 1 ? '' : 's'} from ${name}.`, () => api('POST', `${path}/purge`));
    }

    async function peek() {
      const limit = Math.min(100, Math.max(1, Number(peekLimit.value) || 10));
      peekButton.disabled = true;
      try {
        const messages = await api('GET', `${path}/messages?limit=${limit}`);
        peekList.replaceChildren(messages.length
          ? el('ol', { class: 'messages' }, messages.map(message))
          : el('p', { class: 'note', id: 'peek-empty' }, 'No message is waiting.'));
      } catch (error) {
        if (!(error instanceof Unauthorized)) peekList.replaceChildren(el('p', { class: 'error' }, String(error.message || error)));
      } finally {
        peekButton.disabled = false;
      }
    }

    return {
      live: true,
      async load() {
        [info, detail] = await Promise.all([
          api('GET', path),
          api('GET', `/dashboard/api/queues/${encodeURIComponent(name)}`),
        ]);
        const m = info.metrics;
        badge.textContent = info.paused ? 'paused' : 'active';
        badge.className = `badge ${info.paused ? 'paused' : 'active'}`;
        pause.hidden = info.paused;
        resume.hidden = !info.paused;
        const dlq = info.settings.consumer.dead_letter_queue;
        replayFromDlq.hidden = !dlq;
        if (dlq) replayFromDlq.textContent = `Replay from ${dlq}`;
        const sources = detail.dead_letter_of || [];
        if (replayTo.dataset.sources !== sources.join(',')) {
          replayTo.dataset.sources = sources.join(',');
          replayTo.replaceChildren(...sources.map((source) => el('button', {
            type: 'button', class: 'replay-to', 'data-to': source, onclick: () => replay(name, source),
          }, `Replay to ${source}`)));
        }
        const last = (key) => {
          const values = detail.history[key] || [];
          return values.length ? values[values.length - 1] : null;
        };
        const oldest = m.backlog.oldest_timestamp_ms ? Date.now() - m.backlog.oldest_timestamp_ms : null;
        cards.replaceChildren(
          card('Backlog', int(m.backlog.count), 'backlog'),
          card('Bytes', bytes(m.backlog.bytes)),
          card('In flight', int(m.in_flight), 'in-flight'),
          card('Delayed', int(m.delayed), 'delayed'),
          card('Oldest message', age(oldest), 'oldest'),
          card('Sent/s', rate(last('sent'))),
          card('Acked/s', rate(last('acked'))),
          card('Retried/s', rate(last('retried'))),
          card('Dead-lettered/s', rate(last('dead_lettered'))),
        );
        chartBox.replaceChildren(chart(detail.history, 300));
        settings.replaceChildren(settingsTable(info, m));
        consumer.replaceChildren(...consumerView(info.consumer, detail));
      },
    };
  }

  function table(rows, id) {
    return el('table', { class: 'pairs', id }, el('tbody', {}, rows.filter(Boolean).map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v)))));
  }

  function settingsTable(info, m) {
    const s = info.settings;
    return table([
      ['delivery_delay', `${s.delivery_delay} s`],
      ['message_retention_period', `${int(s.message_retention_period)} s`],
      ['dedup_window', `${s.dedup_window} s`],
      ['max_retries', String(s.consumer.max_retries)],
      ['retry_delay', `${s.consumer.retry_delay} s`],
      ['dead_letter_queue', s.consumer.dead_letter_queue
        ? el('a', { href: `#/queue/${encodeURIComponent(s.consumer.dead_letter_queue)}` }, s.consumer.dead_letter_queue)
        : 'none'],
      ['totals', `${int(m.sent)} sent, ${int(m.acked)} acked, ${int(m.retried)} retried, ${int(m.dead_lettered)} dead-lettered, ${int(m.dropped)} dropped, ${int(m.expired)} expired`],
    ], 'settings-table');
  }

  function consumerView(consumer, detail) {
    if (!consumer) return [el('p', { class: 'note' }, 'No consumer: messages wait until a component or a pull client takes them.')];
    if (consumer.type === 'http_pull') {
      return [table([
        ['type', 'HTTP pull'],
        ['visibility_timeout_ms', int(consumer.visibility_timeout_ms)],
      ], 'consumer-table')];
    }
    const stats = detail.consumer_stats;
    const loaded = detail.component && detail.component.loaded;
    const failures = stats ? Object.entries(stats.failures) : [];
    const p = stats ? stats.batch_seconds : {};
    return [table([
      ['component', el('a', { href: '#/components' }, consumer.component)],
      ['digest', loaded ? el('code', { class: 'digest', title: loaded.digest }, loaded.digest.slice(0, 12)) : '–'],
      ['loaded', loaded ? `${when(loaded.at_ms)} in ${seconds(loaded.load_seconds)}${loaded.from_cache ? ' (cache)' : ''}` : '–'],
      ['batching', `up to ${consumer.max_batch_size} messages, ${consumer.max_batch_timeout} s`],
      ['concurrency', `${stats ? stats.concurrency : 0} now, at most ${consumer.max_concurrency ?? 1}`],
      ['batches', stats ? `${int(stats.batches_ok)} ok, ${int(stats.batches_failed)} failed` : 'none yet'],
      ['batch time', stats ? `p50 ${seconds(p.p50)}, p90 ${seconds(p.p90)}, p99 ${seconds(p.p99)}, mean ${seconds(p.mean)}` : '–'],
      ['failures', failures.length ? failures.map(([kind, n]) => `${kind} ${int(n)}`).join(', ') : 'none'],
    ], 'consumer-table')];
  }

  /** A peeked message, its body shown by its content type. */
  function message(m) {
    let body;
    if (m.content_type === 'json') {
      body = el('pre', { class: 'body json' }, JSON.stringify(m.body, null, 2));
    } else if (m.content_type === 'text') {
      body = el('pre', { class: 'body text' }, m.body);
    } else {
      const raw = Uint8Array.from(atob(m.body), (c) => c.charCodeAt(0));
      body = el('div', {},
        el('pre', { class: 'body hex' }, hexdump(raw)),
        el('details', {}, el('summary', {}, 'base64'), el('pre', { class: 'body base64' }, m.body)));
    }
    return el('li', { class: 'message', 'data-id': m.id },
      el('div', { class: 'meta' },
        el('code', {}, m.id),
        el('span', { class: `badge type-${m.content_type}` }, m.content_type),
        el('span', {}, `sent ${when(m.timestamp_ms)}`),
        el('span', {}, `${m.attempts} attempt${m.attempts === 1 ? '' : 's'}`)),
      body);
  }

  function hexdump(raw) {
    const lines = [];
    for (let offset = 0; offset < raw.length; offset += 16) {
      const chunk = Array.from(raw.slice(offset, offset + 16));
      const hex = chunk.map((b) => b.toString(16).padStart(2, '0')).join(' ');
      const ascii = chunk.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
      lines.push(`${offset.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
    }
    return lines.join('\n') || '(empty)';
  }

  // ---- components ----

  function componentsPage(main) {
    const result = el('p', { id: 'reload-result', class: 'result', role: 'status' });
    const reload = el('button', { type: 'button', id: 'reload', onclick: () => doReload() }, 'Reload the manifest');
    const reloadBox = el('div', { id: 'last-reload' });
    const body = el('tbody', { id: 'component-rows' });
    main.append(
      el('h1', {}, 'Components'),
      el('div', { class: 'actions' }, reload),
      result,
      el('section', { class: 'panel' }, el('h2', {}, 'Last reload'), reloadBox),
      el('table', { class: 'components' },
        el('thead', {}, el('tr', {}, ['Component', 'Role', 'Digest (SHA-256)', 'Loaded or last swapped', 'Load time', 'Swaps', 'Last error'].map((h) => el('th', {}, h)))),
        body),
    );

    async function doReload() {
      reload.disabled = true;
      result.classList.remove('error');
      try {
        const report = await api('POST', '/reload');
        result.textContent = `Reload done: ${describeReport(report)}`;
      } catch (error) {
        if (error instanceof Unauthorized) return;
        result.textContent = String(error.message || error);
        result.classList.add('error');
      } finally {
        reload.disabled = false;
      }
      await refresh();
    }

    return {
      live: true,
      async load() {
        const { components, last_reload: last } = await api('GET', '/dashboard/api/components');
        body.replaceChildren(...components.map((c) => {
          const l = c.loaded;
          const role = !l ? '–' : l.queue
            ? el('span', {}, 'consumer of ', el('a', { href: `#/queue/${encodeURIComponent(l.queue)}` }, l.queue))
            : l.route ? `producer on ${l.route}` : 'producer';
          return el('tr', { 'data-component': c.name, class: c.failure ? 'failed' : '' },
            el('td', { class: 'name' }, c.name),
            el('td', {}, role),
            el('td', { class: 'digest' }, l ? el('code', { title: l.source }, l.digest) : 'not loaded'),
            el('td', {}, l ? when(l.at_ms) : '–'),
            el('td', { class: 'num' }, l ? `${seconds(l.load_seconds)}${l.from_cache ? ' (cache)' : ' (compiled)'}` : '–'),
            el('td', { class: 'num' }, String(c.swaps)),
            el('td', { class: 'error-cell' }, c.failure ? el('span', { class: 'error', title: when(c.failure.at_ms) }, c.failure.error) : ''));
        }));
        if (!last) {
          reloadBox.replaceChildren(el('p', { class: 'note' }, 'No reload since the host started.'));
        } else if (last.error) {
          reloadBox.replaceChildren(el('p', { class: 'error' }, `${when(last.at_ms)}: nothing changed: ${last.error}`));
        } else {
          const failed = last.report.failed || [];
          reloadBox.replaceChildren(el('p', {}, `${when(last.at_ms)}: ${describeReport(last.report)}`));
          if (failed.length) {
            reloadBox.append(el('ul', { class: 'errors', id: 'reload-errors' }, failed.map((f) => el('li', { class: 'error' }, `${f.component}: ${f.error}`))));
          }
        }
      },
    };
  }

  function describeReport(report) {
    const parts = [];
    for (const key of ['queues_created', 'started', 'swapped', 'stopped', 'unchanged']) {
      const names = report[key] || [];
      if (names.length) parts.push(`${key.replace('_', ' ')}: ${names.join(', ')}`);
    }
    const failed = report.failed || [];
    if (failed.length) parts.push(`failed: ${failed.map((f) => f.component).join(', ')}`);
    return parts.join('; ') || 'nothing to do';
  }

  // ---- start ----

  document.addEventListener('DOMContentLoaded', () => {
    $('token-form').addEventListener('submit', tokenEntered);
    $('forget-token').addEventListener('click', forgetToken);
    window.addEventListener('hashchange', route);
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) clearTimeout(timer);
      else refresh();
    });
    route();
  });
})();
