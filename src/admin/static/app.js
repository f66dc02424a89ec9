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
    renderInto($('last-sync'), rev.last_sync, (sync) => {
      if (!sync) return ['—'];
      return [timeEl(sync.at), ' ', sync.error ? el('span', { class: 'error-text' }, [sync.error]) : 'ok'];
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

  function agentRow(a) {
    const { shown, more } = keyAttributes(a.attributes);
    const attrs = shown.map((k) => attrChip(k, a.attributes[k]));
    if (more > 0) attrs.push(el('span', { class: 'more' }, [`+${more}`]));
    const mismatch = a.desired_hash !== a.reported_hash;
    return el('tr', { 'data-uid': a.instance_uid, 'data-status': a.status }, [
      el('td', { class: 'uid' }, [
        el('a', { href: `/agents/${encodeURIComponent(a.instance_uid)}` }, [a.instance_uid]),
      ]),
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
      el('td', {}, [el('code', {}, [short(a.revision)])]),
      el('td', { class: 'seen' }, [connection(a), ' ', timeEl(a.last_seen)]),
    ]);
  }

  function initIndex() {
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

    function query(offset) {
      const params = new URLSearchParams();
      if (status.value) params.set('status', status.value);
      if (rule.value) params.set('rule', rule.value);
      if (search.value.trim()) params.set('q', search.value.trim());
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

    // POSTs an action with the admin token, asking for it (again) when there is none or it is
    // refused. 403: the server has mutating endpoints disabled, and says how to enable them.
    async function act(action, done) {
      const button = $(action);
      button.disabled = true;
      try {
        for (let attempt = 0; attempt < 3; attempt += 1) {
          let t = token();
          if (!t) {
            const answer = window.prompt(`Admin token for ${action} (a token of the server's --admin-token-file):`);
            if (answer === null || !answer.trim()) {
              showMessage('Cancelled: no admin token given.', 'error');
              return;
            }
            t = answer.trim();
            sessionStorage.setItem(TOKEN_KEY, t);
          }
          const response = await fetch(`${url}/${action}`, {
            method: 'POST',
            headers: { Authorization: `Bearer ${t}` },
          });
          let body = {};
          try {
            body = await response.json();
          } catch (_) { /* not JSON */ }
          if (response.status === 401) {
            sessionStorage.removeItem(TOKEN_KEY);
            showMessage('The admin token was refused.', 'error');
            continue;
          }
          if (response.ok) {
            showMessage(done, 'ok');
            refresh();
          } else {
            const reason = body.error || response.statusText;
            showMessage(`${action} refused (${response.status}): ${reason}`, 'error');
          }
          return;
        }
      } catch (error) {
        showMessage(`${action} failed: ${error.message || error}`, 'error');
      } finally {
        button.disabled = false;
      }
    }

    $('push').addEventListener('click', () => act('push', 'Push sent: the agent gets its desired config again.'));
    $('restart').addEventListener('click', () => act('restart', 'Restart command sent.'));
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

  function init() {
    switch (document.body.dataset.page) {
      case 'index': initIndex(); break;
      case 'agent': initAgent(); break;
      case 'rules': initRules(); break;
      default: poller(async () => renderRevision(await getJSON('/api/revision')));
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
