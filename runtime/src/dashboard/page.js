// fleet's dashboard page: polls /api/state about once a second and redraws itself.
//
// Every string from the server goes into the page as text (textContent, text nodes,
// setAttribute), never as markup, so a job or node name cannot inject anything. The chart is
// SVG built element by element; nothing is loaded from anywhere but this origin.
'use strict';

(function () {
  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 5000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  let polls = 0;

  // An element with attributes and children (strings become text nodes).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    setAttrs(e, attrs);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      e.setAttribute(k, String(v));
    }
  }

  function td(text, cls) {
    return el('td', cls ? { class: cls } : {}, text === null || text === undefined ? '' : String(text));
  }

  function stateCell(state, detail) {
    const c = el('td', {}, el('span', { class: 'state state-' + state }, state));
    if (detail) c.append(' ', el('span', { class: 'muted' }, detail));
    return c;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function cpus(millis) {
    return (millis / 1000).toFixed(1);
  }

  function mem(mib) {
    return mib >= 1024 ? (mib / 1024).toFixed(1) + ' GiB' : mib + ' MiB';
  }

  function ago(ms) {
    return ms < 1000 ? ms + ' ms ago' : (ms / 1000).toFixed(1) + ' s ago';
  }

  function clock(unixMs) {
    return new Date(unixMs).toLocaleTimeString();
  }

  function renderNodes(nodes) {
    document.getElementById('nodes-count').textContent = '(' + nodes.length + ')';
    fill(document.querySelector('#nodes tbody'), nodes.map((n) => {
      const name = el('td', { class: 'mono' }, n.node);
      if (n.is_head) name.append(' ', el('span', { class: 'muted' }, '(head)'));
      return el('tr', { 'data-node': n.node, 'data-state': n.state },
        name,
        stateCell(n.state, n.state_detail),
        td(cpus(n.cpu_free_millis) + ' / ' + cpus(n.cpu_total_millis)),
        td(mem(n.mem_free_mib) + ' / ' + mem(n.mem_total_mib)),
        td(n.gpus_free.length + ' / ' + n.gpus_total.length +
          (n.gpus_total.length ? ' [' + n.gpus_free.join(',') + ']' : '')),
        td(n.workers),
        td(n.is_head ? '—' : ago(n.last_beat_ms)),
        td(n.pid));
    }));
  }

  function renderWorkers(workers) {
    document.getElementById('workers-count').textContent = '(' + workers.length + ')';
    fill(document.querySelector('#workers tbody'), workers.map((w) => el('tr',
      { 'data-worker': w.worker },
      td(w.role, 'mono'),
      td(w.index),
      stateCell(w.state, w.alias_of ? 'alias of ' + w.alias_of : null),
      td(w.node, 'mono'),
      td(w.kind),
      td(w.ports.join(', ')),
      td(w.child_pid === null ? '' : w.child_pid),
      td(w.error || '', 'wrap'))));
  }

  function renderEvents(events) {
    fill(document.querySelector('#events tbody'), events.map((e) => el('tr',
      { 'data-kind': e.kind, 'data-seq': e.seq },
      td(clock(e.unix_ms)),
      el('td', {}, el('span', { class: 'state state-' + e.kind }, e.kind.replace('_', ' '))),
      td(e.subject, 'mono'),
      td(e.detail, 'wrap'))));
  }

  // The chart of one job: mean reward (left axis, solid) and policy version (right axis,
  // dashed steps) against seconds since the first episode.
  function chart(series) {
    const W = 500, H = 160, L = 44, R = 36, T = 10, B = 22;
    const s = svg('svg', {
      class: 'chart', viewBox: '0 0 ' + W + ' ' + H, role: 'img',
      'aria-label': 'mean reward and policy version over time', 'data-points': series.length,
    });
    s.append(
      svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }),
      svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }),
      svg('line', { class: 'axis', x1: W - R, y1: T, x2: W - R, y2: H - B }));
    if (series.length === 0) {
      s.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' },
        'no points yet: one comes with every policy version'));
      return s;
    }
    const tMax = Math.max(1e-9, ...series.map((p) => p.t_s));
    const rewards = series.filter((p) => p.mean_reward !== null && p.mean_reward !== undefined);
    let rMin = Math.min(...rewards.map((p) => p.mean_reward));
    let rMax = Math.max(...rewards.map((p) => p.mean_reward));
    if (!rewards.length) { rMin = 0; rMax = 1; }
    if (rMax - rMin < 1e-9) { rMin -= 0.5; rMax += 0.5; }
    const vMax = Math.max(1, ...series.map((p) => p.version));
    const x = (t) => L + (W - L - R) * (t / tMax);
    const yR = (r) => H - B - (H - T - B) * ((r - rMin) / (rMax - rMin));
    const yV = (v) => H - B - (H - T - B) * (v / vMax);
    const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2));
    s.append(
      svg('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, fmt(rMax)),
      svg('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, fmt(rMin)),
      svg('text', { x: W - R + 4, y: T + 8 }, 'v' + vMax),
      svg('text', { x: W - R + 4, y: H - B }, 'v0'),
      svg('text', { x: L, y: H - 6 }, '0 s'),
      svg('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, tMax.toFixed(1) + ' s'));
    const steps = [];
    let prev = null;
    for (const p of series) {
      if (prev !== null) steps.push(x(p.t_s).toFixed(1) + ',' + yV(prev).toFixed(1));
      steps.push(x(p.t_s).toFixed(1) + ',' + yV(p.version).toFixed(1));
      prev = p.version;
    }
    s.append(svg('polyline', { class: 'version', points: steps.join(' ') }));
    if (rewards.length) {
      const pts = rewards.map((p) => x(p.t_s).toFixed(1) + ',' + yR(p.mean_reward).toFixed(1));
      s.append(svg('polyline', { class: 'reward', points: pts.join(' ') }));
      for (const p of rewards.slice(-40)) {
        s.append(svg('circle', { class: 'reward-dot', cx: x(p.t_s).toFixed(1), cy: yR(p.mean_reward).toFixed(1), r: 1.8 }));
      }
    }
    return s;
  }

  function renderJob(j) {
    const p = j.progress;
    const done = p.accepted + p.rejected;
    const last = j.series.length ? j.series[j.series.length - 1] : null;
    const reward = last && last.mean_reward !== null ? last.mean_reward.toFixed(3) : '—';
    const dl = el('dl', {},
      el('dt', {}, 'progress'),
      el('dd', { class: 'progress' },
        el('span', { class: 'accepted' }, String(p.accepted)), ' accepted, ',
        el('span', { class: 'rejected' }, String(p.rejected)), ' rejected of ',
        el('span', { class: 'total' }, String(p.total)),
        ' (' + p.in_flight + ' in flight)'),
      el('dt', {}, 'rate'),
      el('dd', { class: 'rate' }, j.rate_per_s.toFixed(1) + ' episodes/s'),
      el('dt', {}, 'policy version'),
      el('dd', { class: 'version' }, String(p.version)),
      el('dt', {}, 'mean reward'),
      el('dd', {}, reward + ' (latest version)'),
      el('dt', {}, 'submitted'),
      el('dd', {}, clock(j.submitted_unix_ms) + ' by ' + j.submitter + ' (' + j.file_name + ')'));
    if (j.error) dl.append(el('dt', {}, 'error'), el('dd', { class: 'error' }, j.error));
    return el('article', {
      class: 'job', 'data-job-id': j.id, 'data-state': j.state,
      'data-accepted': p.accepted, 'data-done': done,
    },
    el('h3', {},
      el('span', { class: 'job-name' }, j.name),
      el('span', { class: 'job-id mono' }, j.id),
      el('span', { class: 'state state-' + j.state }, j.state)),
    el('progress', { max: Math.max(1, p.total), value: done }),
    dl,
    chart(j.series),
    el('div', { class: 'muted' },
      el('span', { class: 'legend-reward' }, '— mean reward'), '  ',
      el('span', { class: 'legend-version' }, '- - policy version')));
  }

  function renderJobs(jobs) {
    document.getElementById('jobs-count').textContent = '(' + jobs.length + ')';
    const box = document.getElementById('jobs');
    if (!jobs.length) {
      box.replaceChildren(el('p', { class: 'muted' }, 'no jobs yet: ', el('code', {}, 'fleet submit JOB.toml')));
      return;
    }
    box.replaceChildren(el('div', { class: 'jobs' }, ...jobs.map(renderJob)));
  }

  function renderHidden(n) {
    const p = document.getElementById('jobs-hidden');
    p.textContent = n ? n + ' older ended job(s) not shown: fleet job list' : '';
    p.hidden = !n;
  }

  function banner(message) {
    const b = document.getElementById('banner');
    b.textContent = message || '';
    b.hidden = !message;
  }

  function render(s) {
    document.getElementById('cluster-id').textContent = s.cluster_id;
    document.getElementById('updated').textContent = clock(s.generated_unix_ms);
    renderJobs(s.jobs);
    renderHidden(s.jobs_not_shown);
    renderNodes(s.nodes);
    renderWorkers(s.workers);
    renderEvents(s.events);
    banner(s.status_error ? 'the head did not give its status: ' + s.status_error : '');
  }

  async function poll() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch('/api/state', { cache: 'no-store', signal: abort.signal });
      if (!r.ok) throw new Error('HTTP ' + r.status);
      render(await r.json());
      polls += 1;
      document.body.setAttribute('data-polls', String(polls));
      const p = document.getElementById('polls');
      p.textContent = String(polls);
      p.setAttribute('data-polls', String(polls));
    } catch (e) {
      banner('cannot reach the head: ' + (e && e.message ? e.message : String(e)) + ' (retrying)');
    } finally {
      clearTimeout(timer);
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
