// opamp-gitops dashboard: keeps the server-rendered pages live by polling the JSON API every
// 2 s and updating the DOM in place. Plain JavaScript, no build step.
//
// Agent-provided strings are untrusted: they only ever reach the page as text (textContent,
// Node.append(string), setAttribute on data-* attributes), never as HTML.
'use strict';

(() => {
  const POLL_MS = 2000;
  const TOKEN_KEY = 'opamp-gitops-admin-token';
  const DEFAULT_LIMIT = 100;
  // Mirrors KEY_ATTRIBUTES / ROW_ATTRIBUTES in src/admin/dashboard.rs.
  const KEY_ATTRIBUTES = ['host.name', 'environment', 'region', 'role', 'team', 'service.name',
    'k8s.namespace.name'];
  const ROW_ATTRIBUTES = 3;

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers (text only) ----

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children || []) {
      if (child !== null && child !== undefined) node.append(child); // strings become text nodes
    }
    return node;
  }

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  // Rebuilds a container's children only when its data changed.
  const renderedData = new WeakMap();
  function renderInto(container, data, build) {
    if (!container) return;
    const key = JSON.stringify(data);
    if (renderedData.get(container) === key) return;
    renderedData.set(container, key);
    container.replaceChildren(...build(data));
  }

  // Mirrors `short` in src/admin/dashboard.rs: 8 characters, after a `kind:` prefix if any.
  function short(value) {
    if (!value) return '—';
    const text = String(value);
    const colon = text.lastIndexOf(':');
    return text.slice(0, colon + 1) + text.slice(colon + 1, colon + 9);
  }

  function ago(rfc3339) {
    const then = Date.parse(rfc3339);
    if (Number.isNaN(then)) return rfc3339 || '—';
    const secs = Math.max(0, Math.floor((Date.now() - then) / 1000));
    if (secs < 60) return `${secs}s ago`;
    if (secs < 3600) return `${Math.floor(secs / 60)}m ago`;
    if (secs < 86400) return `${Math.floor(secs / 3600)}h ago`;
    return `${Math.floor(secs / 86400)}d ago`;
  }

  function timeEl(rfc3339) {
    return el('time', { datetime: rfc3339, title: rfc3339 }, [ago(rfc3339)]);
  }

  function setTime(node, rfc3339) {
    if (!node) return;
    node.dateTime = rfc3339 || '';
    node.title = rfc3339 || '';
    setText(node, rfc3339 ? ago(rfc3339) : '—');
  }

  function refreshAges() {
    for (const t of document.querySelectorAll('time[datetime]')) {
      if (t.dateTime) setText(t, ago(t.dateTime));
    }
  }

  function badge(status, title) {
    return el('span', { class: `badge status-${status}`, title: title || null }, [status]);
  }

  function health(healthy) {
    if (healthy === null || healthy === undefined) {
      return el('span', { class: 'health unknown' }, ['unknown']);
    }
    return healthy
      ? el('span', { class: 'health healthy' }, ['healthy'])
      : el('span', { class: 'health unhealthy' }, ['unhealthy']);
  }

  function connection(agent) {
    if (agent.stale) {
      return el('span', { class: 'conn stale', title: 'silent for three heartbeat intervals' }, ['stale']);
    }
    if (agent.connected) return el('span', { class: 'conn connected' }, [agent.transport]);
    return el('span', { class: 'conn disconnected' }, ['offline']);
  }

  function attrChip(key, value) {
    return el('span', { class: 'attr' }, [
      el('span', { class: 'k' }, [key]),
      el('span', { class: 'v' }, [value]),
    ]);
  }

  function diagnosticItem(d) {
    let where = '(repository)';
    if (d.file) where = d.line !== null && d.line !== undefined ? `${d.file}:${d.line}` : d.file;
    return el('li', { class: `diag severity-${d.severity}` }, [
      el('code', { class: 'where' }, [where]), ' ',
      el('span', { class: 'message' }, [d.message]),
      d.rule ? ' ' : null, d.rule ? el('span', { class: 'context' }, [`rule ${d.rule}`]) : null,
      d.agent ? ' ' : null, d.agent ? el('span', { class: 'context' }, [`agent ${d.agent}`]) : null,
    ]);
  }

  // ---- API ----

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function getJSON(url) {
    const headers = { Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`; // for servers that protect reads too
    const response = await fetch(url, { headers, cache: 'no-store' });
    let body = null;
    try {
      body = await response.json();
    } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ---- admin token: a sign-in form, kept in this tab's sessionStorage ----

  let afterSignIn = null;

  function renderSignedIn() {
    const signedIn = Boolean(token());
    $('sign-in').hidden = signedIn;
    $('sign-out').hidden = !signedIn;
  }

  // Shows the sign-in form; `then` runs once a token is given.
  function askToSignIn(note, then) {
    afterSignIn = then || null;
    setText($('sign-in-note'), note || 'Actions (push, restart, refresh) need an admin token. It is kept in this tab only.');
    $('sign-in-form').hidden = false;
    $('sign-in-token').focus();
  }

  function initSignIn() {
    renderSignedIn();
    $('sign-in').addEventListener('click', () => askToSignIn());
    $('sign-out').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      renderSignedIn();
    });
    $('sign-in-cancel').addEventListener('click', () => {
      afterSignIn = null;
      $('sign-in-form').hidden = true;
    });
    $('sign-in-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const value = $('sign-in-token').value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $('sign-in-token').value = '';
      $('sign-in-form').hidden = true;
      renderSignedIn();
      const then = afterSignIn;
      afterSignIn = null;
      if (then) then();
    });
  }

  // Asks the operator to confirm `text`; resolves true or false.
  function confirmAction(text) {
    const dialog = $('confirm');
    setText($('confirm-text'), text);
    return new Promise((resolve) => {
      const done = (answer) => {
        $('confirm-yes').onclick = null;
        $('confirm-no').onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      $('confirm-yes').onclick = () => done(true);
      $('confirm-no').onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
    });
  }

  // POSTs to an admin endpoint with the token, asking to sign in first when there is none or
  // it was refused. `report(text, kind)` shows the outcome; `done` is the success text.
  async function adminPost(url, done, report, onSuccess) {
    const t = token();
    if (!t) {
      askToSignIn('Sign in with an admin token to do this.', () => adminPost(url, done, report, onSuccess));
      return;
    }
    let response;
    try {
      response = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${t}` } });
    } catch (error) {
      report(`Failed: ${error.message || error}`, 'error');
      return;
    }
    let body = {};
    try {
      body = await response.json();
    } catch (_) { /* not JSON */ }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      renderSignedIn();
      report('The admin token was refused.', 'error');
      askToSignIn('The admin token was refused: sign in with another one.', () => adminPost(url, done, report, onSuccess));
      return;
    }
    if (response.ok) {
      report(done, 'ok');
      if (onSuccess) onSuccess();
    } else {
      report(`Refused (${response.status}): ${body.error || response.statusText}`, 'error');
    }
  }

  // Runs `step` now and every POLL_MS after it finishes; the returned function runs it again
  // at once (after the one in flight, if any).
  function poller(step) {
    let timer = null;
    let running = false;
    let again = false;
    let polls = 0;
    async function tick() {
      clearTimeout(timer);
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        await step();
        polls += 1;
        document.body.dataset.live = 'ok';
        document.body.dataset.polls = String(polls);
        setText($('live'), 'live');
        $('live').title = 'the page polls the API every 2 s';
      } catch (error) {
        document.body.dataset.live = 'error';
        setText($('live'), 'offline');
        $('live').title = String(error.message || error);
      }
      refreshAges();
      running = false;
      if (again) {
        again = false;
        tick();
        return;
      }
      timer = setTimeout(tick, POLL_MS);
    }
    tick();
    return tick;
  }

  function renderRevision(rev) {
    const cur = rev.current;
    setText($('header-rev'), cur ? cur.id : 'none');
    if (!$('revision')) return;
    setText($('rev-id'), cur ? cur.id : 'none loaded yet');
    $('rev-cache').hidden = !(cur && cur.from_cache);
    setText($('rev-source'), cur ? cur.source : '—');
    setTime($('rev-loaded'), cur && cur.loaded_at);
    renderInto($('rev-commit'), cur && cur.commit, (c) => {
      if (!c) return ['—'];
      const subject = c.url ? el('a', { href: c.url, rel: 'noreferrer' }, [c.subject]) : c.subject;
      return [el('span', { class: 'commit-subject' }, [subject]),
        el('span', { class: 'commit-meta' }, [`${c.author}, `, timeEl(c.time)])];
    });
    renderInto($('last-sync'), rev.last_sync, (sync) => {
      if (!sync) return ['—'];
      if (sync.error) {
        return [el('span', { class: 'sync failed' }, ['failed']), ' ', timeEl(sync.at), ': ',
          el('span', { class: 'error-text' }, [sync.error])];
      }
      return [el('span', { class: 'sync ok' }, ['ok']), ' ', timeEl(sync.at)];
    });
    const rejected = rev.rejected;
    $('rejected').hidden = !rejected;
    if (rejected) {
      setText($('rejected-id'), rejected.id);
      setTime($('rejected-at'), rejected.at);
      renderInto($('rejected-diagnostics'), rejected.diagnostics, (ds) => ds.map(diagnosticItem));
    }
  }

  // ---- fleet page ----

  function keyAttributes(attributes) {
    const names = Object.keys(attributes);
    const shown = KEY_ATTRIBUTES.filter((k) => Object.hasOwn(attributes, k));
    for (const k of names.sort()) {
      if (shown.length >= ROW_ATTRIBUTES) break;
      if (!KEY_ATTRIBUTES.includes(k)) shown.push(k);
    }
    shown.length = Math.min(shown.length, ROW_ATTRIBUTES);
    return { shown, more: names.length - shown.length };
  }

  // Mirrors `label` in src/admin/listing.rs: what names an agent to a person.
  function label(a) {
    for (const key of ['host.name', 'service.name']) {
      if (a.attributes[key]) return a.attributes[key];
    }
    return null;
  }

  function agentRow(a) {
    const { shown, more } = keyAttributes(a.attributes);
    const attrs = shown.map((k) => attrChip(k, a.attributes[k]));
    if (more > 0) attrs.push(el('span', { class: 'more' }, [`+${more}`]));
    const mismatch = a.desired_hash !== a.reported_hash;
    const name = label(a);
    const href = `/agents/${encodeURIComponent(a.instance_uid)}`;
    return el('tr', { 'data-uid': a.instance_uid, 'data-status': a.status }, [
      el('td', { class: 'uid' }, name
        ? [el('a', { href }, [name]), el('span', { class: 'sub' }, [a.instance_uid])]
        : [el('a', { href }, [a.instance_uid])]),
      el('td', { class: 'attrs' }, attrs),
      el('td', { class: 'rule' }, [a.rule ? a.rule : el('span', { class: 'none' }, ['no rule'])]),
      el('td', {}, [badge(a.status, a.last_error)]),
      el('td', {}, [health(a.healthy)]),
      el('td', {
        class: mismatch ? 'hash mismatch' : 'hash',
        title: `desired ${a.desired_hash || 'none'} / reported ${a.reported_hash || 'none'}`,
      }, [
        el('code', {}, [short(a.desired_hash)]), ' ', el('span', { class: 'arrow' }, ['/']), ' ',
        el('code', {}, [short(a.reported_hash)]),
      ]),
      el('td', {}, [el('code', {}, [a.revision ? short(a.revision) : 'unknown'])]),
      el('td', { class: 'seen' }, [connection(a), ' ', timeEl(a.last_seen)]),
    ]);
  }

  // ---- staged rollouts: one panel per scope, with its waves and the operator's buttons ----

  function rolloutPanel(r, act) {
    const waves = r.waves.map((w) => {
      const done = w.agents ? Math.round((100 * w.applied) / w.agents) : 100;
      return el('li', { class: `wave${w.admitted ? ' admitted' : ''}`, 'data-wave': w.index }, [
        el('span', { class: 'wave-label' }, [`wave ${w.index} (${w.label})`]),
        el('progress', { max: 100, value: done, title: `${w.applied} of ${w.agents} applied` }, []),
        el('span', { class: 'wave-counts' }, [`${w.applied}/${w.agents} applied, ${w.failed} failed`]),
      ]);
    });
    const failed = r.failed_agents.map((f) => el('li', {}, [
      el('a', { href: `/agents/${encodeURIComponent(f.instance_uid)}` }, [f.instance_uid]), ': ', f.message,
    ]));
    const button = (action, text) => {
      const b = el('button', { type: 'button', class: 'small', 'data-rollout-action': action }, [text]);
      b.addEventListener('click', () => act(action, r.scope));
      return b;
    };
    return el('div', { class: 'rollout', 'data-scope': r.scope }, [
      el('h3', {}, [
        el('code', {}, [r.scope]), ' ',
        el('span', { class: `pill rollout-state state-${r.state}` }, [r.state]), ' ',
        `wave ${r.wave}`,
      ]),
      el('p', { class: 'rollout-counts' }, [
        `${r.waiting} held, ${r.applied} applied, ${r.failed} failed, ${r.admitted} admitted`,
      ]),
      el('ol', { class: 'waves' }, waves),
      failed.length ? el('ul', { class: 'failed-agents' }, failed) : null,
      el('div', { class: 'rollout-actions' }, [
        button('pause', 'Pause'), ' ', button('resume', 'Resume'), ' ', button('promote', 'Promote'),
      ]),
    ]);
  }

  function initRollouts() {
    const section = $('rollouts');
    if (!section) return;
    const message = (text, kind) => {
      const node = $('rollout-message');
      node.className = `action-message ${kind}`;
      setText(node, text);
      node.hidden = false;
    };
    let refresh = () => {};
    const act = (action, scope) => adminPost(
      `/api/rollout/${action}?scope=${encodeURIComponent(scope)}`,
      `Rollout ${scope}: ${action} accepted.`,
      message,
      () => refresh(),
    );
    refresh = poller(async () => {
      const data = await getJSON('/api/rollout');
      section.hidden = data.rollouts.length === 0;
      renderInto($('rollout-list'), data.rollouts, (rollouts) => rollouts.map((r) => rolloutPanel(r, act)));
    });
  }

  function initIndex() {
    initRollouts();
    const form = $('filters');
    const status = $('filter-status');
    const rule = $('filter-rule');
    const search = $('search');
    const table = $('agents');
    const view = {
      limit: Number(table.dataset.limit) || DEFAULT_LIMIT,
      offset: Number(table.dataset.offset) || 0,
      total: Number(table.dataset.total) || 0,
      shown: Number(table.dataset.shown) || 0,
    };
    let generation = 0; // bumped when the filters change: answers to older queries are dropped
    let revisionId = $('rev-id').textContent;

    let sort = new URLSearchParams(window.location.search).get('sort') || '';

    function query(offset) {
      const params = new URLSearchParams();
      if (status.value) params.set('status', status.value);
      if (rule.value) params.set('rule', rule.value);
      if (search.value.trim()) params.set('q', search.value.trim());
      if (sort) params.set('sort', sort);
      if (offset) params.set('offset', String(offset));
      if (view.limit !== DEFAULT_LIMIT) params.set('limit', String(view.limit));
      return params;
    }

    function syncUrl() {
      const params = query(view.offset).toString();
      history.replaceState(null, '', params ? `/?${params}` : '/');
    }

    function renderPager() {
      const first = view.shown ? view.offset + 1 : 0;
      const last = view.offset + view.shown;
      setText($('showing'), `showing ${first}–${last} of ${view.total}`);
      const prev = $('prev');
      const next = $('next');
      prev.classList.toggle('disabled', view.offset === 0);
      next.classList.toggle('disabled', last >= view.total);
      prev.href = view.offset > 0 ? `/?${query(Math.max(0, view.offset - view.limit))}` : '#';
      next.href = last < view.total ? `/?${query(last)}` : '#';
    }

    async function renderCounts() {
      const counts = await getJSON('/api/summary');
      setText($('count-total'), String(counts.total));
      for (const [name, n] of counts.by_status) setCount(name, n);
      setCount('healthy', counts.healthy);
      setCount('unhealthy', counts.unhealthy);
      setCount('health-unknown', counts.health_unknown);
      setCount('connected', counts.connected);
      setCount('stale', counts.stale);
      setCount('disconnected', counts.disconnected);
    }

    function setCount(name, n) {
      const node = $(`count-${name}`);
      if (!node) return;
      setText(node, String(n));
      node.parentElement.classList.toggle('zero', n === 0);
    }

    async function refreshRuleOptions() {
      const rules = await getJSON('/api/rules');
      const names = rules.map((r) => r.name);
      if (rule.value && !names.includes(rule.value)) names.push(rule.value);
      renderInto(rule, names, (list) => [
        el('option', { value: '' }, ['any']),
        ...list.map((name) => el('option', { value: name, selected: name === rule.value }, [name])),
      ]);
    }

    async function step() {
      const mine = generation;
      const params = query(view.offset);
      params.set('limit', String(view.limit));
      const [page, rev] = await Promise.all([
        getJSON(`/api/agents?${params}`),
        getJSON('/api/revision'),
      ]);
      if (mine !== generation) return; // the filters changed meanwhile; the next step renders
      if (page.agents.length === 0 && view.offset > 0 && page.total > 0) {
        // The page emptied (agents went away): go back to the last page.
        view.offset = Math.floor((page.total - 1) / view.limit) * view.limit;
        syncUrl();
        refresh();
        return;
      }
      view.total = page.total;
      view.shown = page.agents.length;
      renderInto($('agent-rows'), page.agents, (agents) => agents.map(agentRow));
      $('no-agents').hidden = page.agents.length > 0;
      renderPager();
      renderRevision(rev);
      const currentId = rev.current ? rev.current.id : '';
      if (currentId !== revisionId) {
        revisionId = currentId;
        await refreshRuleOptions();
      }
      await renderCounts();
    }

    const refresh = poller(step);

    function filtersChanged() {
      generation += 1;
      view.offset = 0;
      syncUrl();
      refresh();
    }

    let typing = null;
    status.addEventListener('change', filtersChanged);
    rule.addEventListener('change', filtersChanged);
    search.addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(filtersChanged, 250);
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      clearTimeout(typing);
      filtersChanged();
    });
    for (const [id, delta] of [['prev', -1], ['next', 1]]) {
      $(id).addEventListener('click', (event) => {
        event.preventDefault();
        const offset = delta < 0 ? Math.max(0, view.offset - view.limit) : view.offset + view.shown;
        if (offset === view.offset || offset >= view.total) return;
        generation += 1;
        view.offset = offset;
        syncUrl();
        refresh();
      });
    }
    function renderSortHeaders() {
      for (const link of document.querySelectorAll('th.sortable a[data-sort]')) {
        const key = link.dataset.sort;
        const th = link.parentElement;
        const asc = sort === key;
        const desc = sort === `-${key}`;
        th.classList.toggle('sorted', asc || desc);
        th.classList.toggle('asc', asc);
        th.classList.toggle('desc', desc);
        if (asc || desc) th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        else th.removeAttribute('aria-sort');
        link.href = `?sort=${asc ? '-' : ''}${key}`;
      }
    }
    for (const link of document.querySelectorAll('th.sortable a[data-sort]')) {
      link.addEventListener('click', (event) => {
        event.preventDefault();
        const key = link.dataset.sort;
        sort = sort === key ? `-${key}` : key;
        renderSortHeaders();
        filtersChanged();
      });
    }
    renderSortHeaders();

    const refreshNow = $('refresh-now');
    const refreshMessage = (text, kind) => {
      const node = $('refresh-message');
      node.className = `action-message ${kind}`;
      setText(node, text);
      node.hidden = false;
    };
    refreshNow.addEventListener('click', async () => {
      refreshNow.disabled = true;
      try {
        await adminPost('/api/refresh', 'Refresh requested: the source is fetched now.', refreshMessage, refresh);
      } finally {
        refreshNow.disabled = false;
      }
    });

    for (const tile of document.querySelectorAll('[data-filter-status]')) {
      tile.addEventListener('click', (event) => {
        event.preventDefault();
        const wanted = tile.dataset.filterStatus;
        status.value = status.value === wanted ? '' : wanted;
        filtersChanged();
      });
    }
  }

  // ---- agent page ----

  function kvRows(map) {
    const keys = Object.keys(map || {}).sort();
    if (keys.length === 0) return [el('tr', { class: 'empty' }, [el('td', { colspan: 2 }, ['none'])])];
    return keys.map((k) => el('tr', {}, [el('th', {}, [k]), el('td', {}, [map[k]])]));
  }

  function diffLines(diff) {
    return diff.split('\n').filter((line, i, all) => i < all.length - 1 || line !== '').map((line) => {
      let kind = 'ctx';
      if (line.startsWith('+++ ') || line.startsWith('--- ')) kind = 'hdr';
      else if (line.startsWith('@@')) kind = 'hunk';
      else if (line.startsWith('+')) kind = 'add';
      else if (line.startsWith('-')) kind = 'del';
      return el('span', { class: kind }, [line]);
    });
  }

  function fileList(empty) {
    return (files) => {
      const names = Object.keys(files || {}).sort();
      if (names.length === 0) return [el('p', { class: 'note' }, [empty])];
      return names.map((name) => el('details', { open: true }, [
        el('summary', {}, [name || '(unnamed)']),
        el('pre', {}, [files[name]]),
      ]));
    };
  }

  function healthDetail(h) {
    if (!h) return [el('p', { class: 'note' }, ['not reported'])];
    const head = el('p', {}, [health(h.healthy), ' ', h.status || '',
      h.last_error ? ' ' : null, h.last_error ? el('span', { class: 'error-text' }, [h.last_error]) : null]);
    const items = Object.keys(h.components || {}).sort().map((name) => {
      const c = h.components[name];
      return el('li', {}, [health(c.healthy), ' ', el('code', {}, [name]), ' ', c.status || '',
        c.last_error ? ' ' : null, c.last_error ? el('span', { class: 'error-text' }, [c.last_error]) : null]);
    });
    return [head, el('ul', { class: 'components' }, items)];
  }

  function renderAgent(a) {
    const status = $('status');
    status.className = `badge status-${a.status}`;
    setText(status, a.status);
    renderInto($('health'), a.healthy, (h) => [health(h)]);
    renderInto($('connection'), { stale: a.stale, connected: a.connected, transport: a.transport },
      (c) => [connection(c)]);
    $('last-error').hidden = !a.last_error;
    setText($('last-error-text'), a.last_error || '');
    $('health-error').hidden = !a.health_error;
    setText($('health-error-text'), a.health_error || '');
    setText($('rule'), a.rule || 'no rule (unmanaged)');
    setText($('transport'), a.transport);
    setText($('desired-hash'), a.desired_hash || '—');
    setText($('reported-hash'), a.reported_hash || '—');
    setText($('agent-revision'), a.revision || 'unknown');
    setTime($('first-seen'), a.first_seen);
    setTime($('last-seen'), a.last_seen);
    setText($('token-name'), a.token_name || '—');
    renderInto($('attrs-identifying').tBodies[0], a.identifying_attributes, kvRows);
    renderInto($('attrs-non-identifying').tBodies[0], a.non_identifying_attributes, kvRows);
    const reported = a.effective_config !== null;
    $('diff').hidden = !a.diff;
    $('diff-empty').hidden = Boolean(a.diff) || !reported;
    $('diff-unreported').hidden = reported;
    renderInto($('diff'), a.diff || '', diffLines);
    renderInto($('desired-config'), a.desired_config, fileList('none'));
    renderInto($('effective-config'), a.effective_config, fileList('not reported'));
    renderInto($('health-detail'), a.health, healthDetail);
    renderInto($('capabilities'), a.capabilities, (caps) => caps.map((c) => el('li', {}, [c])));
    $('restart').classList.toggle('secondary', !a.accepts_restart);
  }

  function showMessage(text, kind) {
    const message = $('action-message');
    message.className = `action-message ${kind}`;
    setText(message, text);
    message.hidden = false;
  }

  function initAgent() {
    const uid = document.body.dataset.uid;
    const url = `/api/agents/${encodeURIComponent(uid)}`;

    const refresh = poller(async () => {
      const [agent, rev] = await Promise.all([
        getJSON(url).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
        getJSON('/api/revision'),
      ]);
      renderRevision(rev);
      if (agent === null) {
        const status = $('status');
        status.className = 'badge status-unmanaged';
        setText(status, 'forgotten');
        return;
      }
      renderAgent(agent);
    });

    async function act(action, question, done) {
      const button = $(action);
      if (!(await confirmAction(question))) {
        showMessage(`Cancelled: no ${action} sent.`, 'error');
        return;
      }
      button.disabled = true;
      try {
        await adminPost(`${url}/${action}`, done, showMessage, refresh);
      } finally {
        button.disabled = false;
      }
    }

    const who = () => $('uid').textContent;
    $('push').addEventListener('click', () => act('push',
      `Send the desired config to agent ${who()} again, whatever it reported?`,
      'Push sent: the agent gets its desired config again.'));
    $('restart').addEventListener('click', () => act('restart',
      `Restart agent ${who()}? Its collector stops and starts again.`,
      'Restart command sent.'));
  }

  // ---- rules page ----

  function ruleRow(r, index) {
    const match = Object.keys(r.match).map((k) => attrChip(k,
      Array.isArray(r.match[k]) ? r.match[k].join(' | ') : r.match[k]));
    if (match.length === 0) match.push(el('span', { class: 'none' }, ['every agent']));
    let files = [];
    if (r.template !== undefined) files = [el('code', {}, [r.template])];
    else if (r.files) {
      files = Object.keys(r.files).map((f) => el('span', { class: 'file' }, [
        el('code', {}, [f]), ' ← ', el('code', {}, [r.files[f]])]));
    }
    return el('tr', { 'data-rule': r.name }, [
      el('td', { class: 'n' }, [String(index + 1)]),
      el('td', { class: 'name' }, [el('a', { href: `/?rule=${encodeURIComponent(r.name)}` }, [r.name])]),
      el('td', { class: 'match' }, match),
      el('td', { class: 'files' }, files),
      el('td', { class: 'num agents' }, [String(r.agents)]),
      el('td', { class: 'num applied' }, [String(r.applied)]),
      el('td', { class: r.failed ? 'num failed bad' : 'num failed' }, [String(r.failed)]),
    ]);
  }

  function initRules() {
    poller(async () => {
      const [rules, rev] = await Promise.all([getJSON('/api/rules'), getJSON('/api/revision')]);
      renderRevision(rev);
      renderInto($('rule-rows'), rules, (list) => (list.length
        ? list.map(ruleRow)
        : [el('tr', { class: 'empty' }, [el('td', { colspan: 7 }, ['No revision loaded.'])])]));
    });
  }

  // ---- events page ----

  // What an event says besides its kind, time and agent: its other fields as `key value`.
  function eventDetail(e) {
    const skip = new Set(['id', 'at', 'kind', 'agent']);
    const parts = [];
    for (const [key, value] of Object.entries(e)) {
      if (skip.has(key) || value === null || value === undefined || value === '') continue;
      parts.push(el('span', { class: 'attr' }, [el('span', { class: 'k' }, [key]),
        el('span', { class: 'v' }, [typeof value === 'object' ? JSON.stringify(value) : String(value)])]));
    }
    return parts;
  }

  function eventRow(e) {
    const agentCell = e.agent
      ? el('a', { href: `/agents/${encodeURIComponent(e.agent)}` }, [e.agent])
      : el('span', { class: 'none' }, ['—']);
    return el('tr', { 'data-kind': e.kind, 'data-id': String(e.id) }, [
      el('td', { class: 'at' }, [timeEl(e.at)]),
      el('td', { class: 'kind' }, [el('code', {}, [e.kind])]),
      el('td', { class: 'agent' }, [agentCell]),
      el('td', { class: 'detail' }, eventDetail(e)),
    ]);
  }

  function initEvents() {
    const kind = $('event-kind');
    const agentFilter = $('event-agent');
    const view = { offset: 0, limit: Number($('events').dataset.limit) || DEFAULT_LIMIT, total: 0, shown: 0 };
    const initial = new URLSearchParams(window.location.search);
    kind.value = initial.get('kind') || '';
    agentFilter.value = initial.get('agent') || '';
    view.offset = Number(initial.get('offset')) || 0;
    let generation = 0;

    function query(offset) {
      const params = new URLSearchParams();
      if (kind.value) params.set('kind', kind.value);
      if (agentFilter.value.trim()) params.set('agent', agentFilter.value.trim());
      if (offset) params.set('offset', String(offset));
      return params;
    }

    const refresh = poller(async () => {
      const mine = generation;
      const params = query(view.offset);
      params.set('limit', String(view.limit));
      const [page, rev] = await Promise.all([getJSON(`/api/events?${params}`), getJSON('/api/revision')]);
      if (mine !== generation) return;
      renderRevision(rev);
      view.total = page.total;
      view.shown = page.events.length;
      renderInto($('event-rows'), page.events, (events) => events.map(eventRow));
      $('no-events').hidden = page.events.length > 0;
      const first = view.shown ? view.offset + 1 : 0;
      setText($('events-showing'), `showing ${first}–${view.offset + view.shown} of ${view.total}`);
      $('events-prev').classList.toggle('disabled', view.offset === 0);
      $('events-next').classList.toggle('disabled', view.offset + view.shown >= view.total);
    });

    function changed() {
      generation += 1;
      view.offset = 0;
      const params = query(0).toString();
      history.replaceState(null, '', params ? `/events?${params}` : '/events');
      refresh();
    }
    let typing = null;
    kind.addEventListener('change', changed);
    agentFilter.addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(changed, 250);
    });
    $('event-filters').addEventListener('submit', (event) => {
      event.preventDefault();
      changed();
    });
    for (const [id, delta] of [['events-prev', -1], ['events-next', 1]]) {
      $(id).addEventListener('click', (event) => {
        event.preventDefault();
        const offset = delta < 0 ? Math.max(0, view.offset - view.limit) : view.offset + view.shown;
        if (offset === view.offset || offset >= view.total) return;
        generation += 1;
        view.offset = offset;
        refresh();
      });
    }
  }

  function init() {
    initSignIn();
    switch (document.body.dataset.page) {
      case 'index': initIndex(); break;
      case 'agent': initAgent(); break;
      case 'rules': initRules(); break;
      case 'events': initEvents(); break;
      default: poller(async () => renderRevision(await getJSON('/api/revision')));
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
