'use strict';
// The recstream player page.  Static: it holds no data and no secret.
// * Sign-in: POST /rcs/tokens (Basic, once) gives a bearer token that lives in
//   this closure only: never localStorage, sessionStorage or a cookie.  Every API
//   request sends it with credentials: 'omit' (so the browser never shows its own
//   password prompt, and never sends remembered Basic credentials).
// * Media: <audio>/<video> cannot send the token, so they play playback tickets
//   (POST /rcs/playback-tickets): one recording, a few minutes, ended by sign-out.
// * Text from headers reaches the page only as textContent.
(function () {
  const $ = (id) => document.getElementById(id);
  const el = {
    signIn: $('sign-in'), form: $('sign-in-form'), user: $('user'), password: $('password'),
    signInButton: $('sign-in-button'), signInError: $('sign-in-error'),
    who: $('who'), whoName: $('who-name'), signOut: $('sign-out'),
    message: $('message'), messageText: $('message-text'), retry: $('retry'),
    browse: $('browse'), filters: $('filters'), q: $('f-q'), tenant: $('f-tenant'),
    from: $('f-from'), to: $('f-to'), kind: $('f-kind'), clear: $('f-clear'),
    status: $('status'), table: $('interactions'), body: document.querySelector('#interactions tbody'),
    zone: $('zone-note'), prev: $('prev'), next: $('next'), pageNo: $('page-no'),
    pageSize: $('page-size'),
    player: $('player'), title: $('player-title'), meta: $('player-meta'), members: $('members'),
    audio: $('audio'), video: $('video'), screenNote: $('screen-note'),
    play: $('play'), clock: $('clock'), timeline: $('timeline'), wave: $('wave'),
    waveNote: $('wave-note'), close: $('close-player'),
  };

  // --- session ---------------------------------------------------------------------
  let token = null;
  let tokenTimer = null;
  let retryAction = null;

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  function basicHeader(user, password) {
    const bytes = new TextEncoder().encode(user + ':' + password);
    let bin = '';
    for (const b of bytes) { bin += String.fromCharCode(b); }
    return 'Basic ' + btoa(bin);
  }

  async function call(method, path, options) {
    const opts = options || {};
    const headers = { Accept: 'application/json' };
    if (opts.authorization) { headers.Authorization = opts.authorization; }
    else if (token) { headers.Authorization = 'Bearer ' + token; }
    let body;
    if (opts.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.json);
    }
    let r;
    try {
      r = await fetch(path, { method, headers, body, credentials: 'omit', cache: 'no-store' });
    } catch (err) {
      throw new ApiError(0, 'Cannot reach the server (network error). Check your connection and retry.');
    }
    if (r.ok) { return r.status === 204 ? null : r.json(); }
    let text = '';
    try { text = (await r.json()).message || ''; } catch (err) { text = ''; }
    const retryAfter = parseInt(r.headers.get('Retry-After') || '0', 10) || 0;
    throw new ApiError(r.status, text || ('The server answered ' + r.status + '.'), retryAfter);
  }

  function say(text, retry) {
    el.messageText.textContent = text;
    el.message.hidden = !text;
    retryAction = retry || null;
    el.retry.hidden = !retry;
  }

  // One place that turns an API failure into what the user reads and can do.
  function failed(err, retry) {
    if (!(err instanceof ApiError)) { say('Unexpected error: ' + err.message); return; }
    if (err.status === 401) {
      forget();
      showSignIn('Your session has ended (expired or revoked). Please sign in again.');
    } else if (err.status === 403) {
      say('Not allowed: ' + err.message);
    } else if (err.status === 429) {
      say('Too many attempts. Try again in ' + (err.retryAfter || 60) + ' seconds.', retry);
    } else if (err.status === 0) {
      say(err.message, retry);
    } else {
      say(err.message, retry);
    }
  }

  el.retry.addEventListener('click', function () {
    const again = retryAction;
    say('');
    if (again) { again(); }
  });

  function showSignIn(error) {
    el.signIn.hidden = false;
    el.browse.hidden = true;
    el.player.hidden = true;
    el.who.hidden = true;
    el.signInError.textContent = error || '';
    el.user.focus();
  }

  el.form.addEventListener('submit', async function (ev) {
    ev.preventDefault();
    const user = el.user.value.trim();
    const password = el.password.value;
    if (!user || !password) {
      el.signInError.textContent = 'Enter your user name and password.';
      (user ? el.password : el.user).focus();
      return;
    }
    el.signInButton.disabled = true;
    el.signInError.textContent = 'Signing in…';
    try {
      const grant = await call('POST', '/rcs/tokens', { authorization: basicHeader(user, password) });
      token = grant.access_token;
      el.password.value = '';
      el.signInError.textContent = '';
      clearTimeout(tokenTimer);
      tokenTimer = setTimeout(function () {
        forget();
        showSignIn('Your session has expired. Please sign in again.');
      }, Math.max(1, grant.expires_in - 5) * 1000);
      el.whoName.textContent = user;
      el.who.hidden = false;
      el.signIn.hidden = true;
      el.browse.hidden = false;
      say('');
      view.cursors = [null];
      view.page = 0;
      await load();
      el.q.focus();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        el.signInError.textContent = 'Wrong user name or password.';
      } else if (err instanceof ApiError && err.status === 429) {
        el.signInError.textContent = 'Too many failed attempts. Try again in ' +
          (err.retryAfter || 60) + ' seconds.';
      } else if (err instanceof ApiError && err.status === 403) {
        el.signInError.textContent = 'Not allowed: ' + err.message;
      } else {
        el.signInError.textContent = err.message;
      }
      el.password.focus();
    } finally {
      el.signInButton.disabled = false;
    }
  });

  // Forget everything of the session in this page.
  function forget() {
    token = null;
    clearTimeout(tokenTimer);
    stopPlayer();
    el.body.textContent = '';
    el.tenant.length = 1;
    el.status.textContent = '';
    el.whoName.textContent = '';
  }

  el.signOut.addEventListener('click', async function () {
    const had = token;
    if (had) {
      try { await call('DELETE', '/rcs/tokens'); } catch (err) { /* revoked or gone: either way */ }
    }
    forget();
    say('');
    showSignIn('');
    el.signInError.textContent = 'Signed out.';
  });

  // --- formatting ------------------------------------------------------------------
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
  const when = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit',
    second: '2-digit', timeZoneName: 'short',
  });
  function localTime(ms) { return when.format(new Date(ms)); }
  function humanSize(n) {
    if (n === null || n === undefined) { return 'incomplete'; }
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = n;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i === 0 ? String(v) : v.toFixed(v < 100 ? 1 : 0)) + ' ' + units[i];
  }
  function clockText(seconds) {
    if (!isFinite(seconds) || seconds < 0) { return '—'; }
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, '0');
    return h ? h + ':' + String(m).padStart(2, '0') + ':' + ss : m + ':' + ss;
  }
  function durationText(ms) { return ms === null || ms === undefined ? '—' : clockText(ms / 1000); }
  const KIND = { voice: 'Call', screen: 'Screen' };
  const SIGNATURE = {
    valid: 'Signature valid', invalid: 'Signature INVALID', unsigned: 'Unsigned',
    unchecked: 'Signature not checked',
  };
  const SEVERITY = ['invalid', 'unchecked', 'unsigned', 'valid'];

  // A signature badge, or null when the listing says nothing about signatures.
  function signatureBadge(sig) {
    if (!sig || typeof sig !== 'object' || !(sig.status in SIGNATURE)) { return null; }
    const span = document.createElement('span');
    span.className = 'badge sig sig-' + sig.status;
    span.textContent = SIGNATURE[sig.status];
    if (sig.status !== 'unsigned' && typeof sig.signer === 'string' && sig.signer) {
      const who = document.createElement('span');
      who.className = 'signer';
      who.textContent = ' by ' + sig.signer;
      span.appendChild(who);
    }
    return span;
  }
  function worstSignature(recordings) {
    let worst = null;
    for (const r of recordings) {
      const s = r.signature;
      if (!s || !(s.status in SIGNATURE)) { continue; }
      if (!worst || SEVERITY.indexOf(s.status) < SEVERITY.indexOf(worst.status)) { worst = s; }
    }
    return worst;
  }

  // --- the list ----------------------------------------------------------------------
  const view = { cursors: [null], page: 0, next: null, items: [] };
  const durations = new Map(); // interaction -> its Duration cell, for what the header lacks

  function localDay(value, after) {
    // <input type=date> gives YYYY-MM-DD in the user's zone: send that local midnight
    // (the day after for "to", which the server treats as exclusive) as an instant.
    const [y, m, d] = value.split('-').map(Number);
    return new Date(y, m - 1, d + (after ? 1 : 0)).toISOString();
  }

  function query() {
    const p = new URLSearchParams();
    const q = el.q.value.trim();
    if (q) { p.set('q', q); }
    if (el.tenant.value) { p.set('tenant', el.tenant.value); }
    if (el.from.value) { p.set('from', localDay(el.from.value, false)); }
    if (el.to.value) { p.set('to', localDay(el.to.value, true)); }
    if (el.kind.value) { p.set('kind', el.kind.value); }
    p.set('limit', el.pageSize.value);
    const cursor = view.cursors[view.page];
    if (cursor) { p.set('cursor', cursor); }
    return p;
  }

  async function load() {
    if (!token) { return; }
    if (el.from.value && el.to.value && el.from.value > el.to.value) {
      el.status.textContent = '"From" must not be after "To".';
      return;
    }
    el.status.textContent = 'Loading…';
    el.table.setAttribute('aria-busy', 'true');
    try {
      const data = await call('GET', '/rcs/interactions?' + query().toString());
      view.next = data.next;
      view.items = data.interactions;
      tenants(data.tenants);
      render();
    } catch (err) {
      el.status.textContent = '';
      failed(err, load);
    } finally {
      el.table.removeAttribute('aria-busy');
    }
  }

  function tenants(list) {
    const have = Array.from(el.tenant.options).slice(1).map((o) => o.value);
    if (have.join('\n') === list.join('\n')) { return; }
    const keep = el.tenant.value;
    el.tenant.length = 1;
    for (const t of list) {
      const o = document.createElement('option');
      o.value = t;
      o.textContent = t;
      el.tenant.appendChild(o);
    }
    el.tenant.value = list.includes(keep) ? keep : '';
  }

  function cell(row, label, content) {
    const td = document.createElement('td');
    td.dataset.label = label;
    if (content instanceof Node) { td.appendChild(content); } else { td.textContent = content; }
    row.appendChild(td);
    return td;
  }

  function mediaSummary(it) {
    const frag = document.createDocumentFragment();
    for (const k of ['voice', 'screen'].filter((x) => it.kinds.includes(x))) {
      const b = document.createElement('span');
      b.className = 'badge kind-' + k;
      b.textContent = KIND[k] || k;
      frag.appendChild(b);
    }
    const n = document.createElement('span');
    n.className = 'count';
    n.textContent = it.recordings.length + (it.recordings.length === 1 ? ' file' : ' files');
    frag.appendChild(n);
    return frag;
  }

  function render() {
    el.body.textContent = '';
    durations.clear();
    for (const it of view.items) {
      const row = document.createElement('tr');
      row.dataset.id = it.tenant + '/' + it.recording_id;
      cell(row, 'Started', localTime(it.start_ms));
      const id = cell(row, 'Recording ID', it.recording_id);
      id.className = 'rid';
      cell(row, 'Tenant', it.tenant);
      cell(row, 'Media', mediaSummary(it));
      const dur = cell(row, 'Duration', durationText(it.duration_ms));
      durations.set(it, dur);
      cell(row, 'Size', humanSize(it.size));
      cell(row, 'Signature', signatureBadge(worstSignature(it.recordings)) || '');
      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'open';
      open.textContent = 'Open';
      open.setAttribute('aria-label', 'Open interaction ' + it.recording_id + ' of ' + it.tenant);
      open.addEventListener('click', function () { openInteraction(it, open); });
      cell(row, '', open);
      el.body.appendChild(row);
    }
    const n = view.items.length;
    el.table.hidden = n === 0;
    const filtered = el.q.value || el.tenant.value || el.from.value || el.to.value || el.kind.value;
    el.status.textContent = n === 0
      ? (filtered ? 'No interactions match these filters.' : 'No recordings of your tenants yet.')
      : 'Showing ' + n + (n === 1 ? ' interaction' : ' interactions') + ' on page ' + (view.page + 1) +
        (view.next ? '; more on the next page.' : '.');
    el.zone.textContent = 'Times are local (' + zone + ').';
    el.prev.disabled = view.page === 0;
    el.next.disabled = !view.next;
    el.pageNo.textContent = 'Page ' + (view.page + 1);
  }

  function fresh() { view.cursors = [null]; view.page = 0; load(); }
  el.filters.addEventListener('submit', function (ev) { ev.preventDefault(); fresh(); });
  el.clear.addEventListener('click', function () {
    el.q.value = ''; el.tenant.value = ''; el.from.value = ''; el.to.value = ''; el.kind.value = '';
    fresh();
  });
  for (const f of [el.tenant, el.kind, el.from, el.to, el.pageSize]) {
    f.addEventListener('change', fresh);
  }
  el.next.addEventListener('click', function () {
    if (!view.next) { return; }
    view.cursors[view.page + 1] = view.next;
    view.page += 1;
    load();
  });
  el.prev.addEventListener('click', function () {
    if (view.page === 0) { return; }
    view.page -= 1;
    load();
  });

  // --- the player ----------------------------------------------------------------------
  // One timeline, on the master's clock: the call audio when there is one (what a
  // supervisor listens to), else the one recording played.  The screen recording
  // follows it, shifted by the difference of the two recordings' start times.
  const DRIFT_SEEK = 0.3; // seconds: farther apart than this, jump
  const DRIFT_EASE = 0.04; // closer than this: in step; between: nudge the playback rate
  const WAVE_MAX_BYTES = 48 * 1024 * 1024; // ~50 min of 16-bit 8 kHz: decoded at 8 kHz
  const p = {
    master: null, slave: null, offset: 0, opener: null, timer: null, interaction: null,
    peaks: null, sources: new Map(), renewedAt: new Map(), generation: 0,
  };
  window.recstreamPlayer = p; // for tests and the console: holds no token

  function stopPlayer() {
    p.generation += 1;
    for (const m of [el.audio, el.video]) {
      m.pause();
      m.removeAttribute('src');
      m.load();
      m.hidden = true;
      m.playbackRate = 1;
    }
    clearInterval(p.timer);
    p.timer = null;
    p.master = p.slave = null;
    p.peaks = null;
    p.sources.clear();
    el.screenNote.hidden = true;
    el.player.hidden = true;
    el.play.disabled = true;
    el.waveNote.textContent = '';
  }

  async function ticket(rec) {
    const t = await call('POST', '/rcs/playback-tickets', { json: { id: rec.id } });
    return t.url;
  }

  function factsText(rec) {
    return ' · ' + rec.media_type + ' · started ' + localTime(rec.created_ms) + ' · ' +
      durationText(rec.duration_ms) + ' · ' + humanSize(rec.size);
  }

  function memberItem(rec, it) {
    const li = document.createElement('li');
    li.dataset.id = rec.id;
    const name = document.createElement('strong');
    name.textContent = rec.media_kind === 'voice' ? 'Call recording' : 'Screen recording';
    li.appendChild(name);
    const facts = document.createElement('span');
    facts.className = 'facts';
    facts.textContent = factsText(rec);
    li.appendChild(facts);
    const badge = signatureBadge(rec.signature);
    if (badge) { li.appendChild(document.createTextNode(' ')); li.appendChild(badge); }
    const voice = it.recordings.find((r) => r.media_kind === 'voice');
    const buttons = document.createElement('span');
    buttons.className = 'buttons';
    if (rec.media_kind === 'screen' && voice) {
      buttons.appendChild(button('Play with the call', 'with-call', function () { start(voice, rec); }));
    }
    buttons.appendChild(button('Play alone', 'alone', function () { start(rec, null); }));
    li.appendChild(buttons);
    return li;
  }

  function button(text, cls, action) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = cls;
    b.textContent = text;
    b.addEventListener('click', action);
    return b;
  }

  function openInteraction(it, opener) {
    stopPlayer();
    p.interaction = it;
    p.opener = opener;
    el.title.textContent = 'Interaction ' + it.recording_id + ' (' + it.tenant + ')';
    el.meta.textContent = 'Started ' + localTime(it.start_ms) + ' · ' + it.recordings.length +
      (it.recordings.length === 1 ? ' recording' : ' recordings');
    el.members.textContent = '';
    for (const rec of it.recordings) { el.members.appendChild(memberItem(rec, it)); }
    el.player.hidden = false;
    el.title.focus();
    const voice = it.recordings.find((r) => r.media_kind === 'voice');
    const screen = it.recordings.find((r) => r.media_kind === 'screen');
    start(voice || screen, voice && screen ? screen : null);
  }

  // Play ``main`` (its clock is the timeline), with ``follower`` kept in step.
  async function start(main, follower) {
    const gen = ++p.generation;
    for (const m of [el.audio, el.video]) { m.pause(); m.hidden = true; m.playbackRate = 1; }
    p.master = main.media_kind === 'voice' ? el.audio : el.video;
    p.slave = follower ? el.video : null;
    // Beside the call, the video is muted: a muxed file carries the call's audio too.
    el.video.muted = Boolean(follower);
    p.offset = follower ? (follower.created_ms - main.created_ms) / 1000 : 0;
    p.sources.clear();
    p.sources.set(p.master, main);
    if (follower) { p.sources.set(p.slave, follower); }
    p.peaks = null;
    el.play.disabled = true;
    el.screenNote.hidden = true;
    draw();
    try {
      for (const [m, rec] of p.sources) {
        const url = await ticket(rec);
        if (gen !== p.generation) { return; }
        m.src = url;
        m.hidden = false;
      }
    } catch (err) {
      failed(err, function () { start(main, follower); });
      return;
    }
    for (const m of [el.audio, el.video]) {
      if (!p.sources.has(m)) { m.removeAttribute('src'); m.load(); }
    }
    el.video.hidden = !p.sources.has(el.video);
    el.audio.hidden = true; // the page's own controls drive it
    el.play.disabled = false;
    clearInterval(p.timer);
    p.timer = setInterval(sync, 250);
    if (main.media_kind === 'voice') { waveform(main, gen); } else {
      const hasCall = p.interaction && p.interaction.recordings.some((r) => r.media_kind === 'voice');
      el.waveNote.textContent = hasCall
        ? 'No waveform: the screen recording plays alone (the waveform is of the call).'
        : 'No waveform: this interaction has no call recording.';
    }
  }

  function duration() {
    const d = p.master ? p.master.duration : NaN;
    return isFinite(d) ? d : 0;
  }
  function now() { return p.master ? p.master.currentTime : 0; }

  function seek(t) {
    if (!p.master || !duration()) { return; }
    p.master.currentTime = Math.max(0, Math.min(duration(), t));
    follow(true);
    draw();
  }

  function toggle() {
    if (!p.master) { return; }
    if (p.master.paused) {
      p.master.play().catch(function (err) { say('Playback failed: ' + err.message); });
    } else {
      p.master.pause();
    }
  }

  // Keep the follower on the master's clock: jump when far off, else ease the rate.
  function follow(hard) {
    const s = p.slave;
    if (!s) { return; }
    const target = now() - p.offset;
    const end = isFinite(s.duration) ? s.duration : Infinity;
    const inside = target >= 0 && target < end;
    el.screenNote.hidden = inside || !isFinite(s.duration);
    if (!inside) {
      if (!s.paused) { s.pause(); }
      el.screenNote.textContent = target < 0
        ? 'The screen recording starts ' + clockText(-target) + ' later.'
        : 'The screen recording has ended.';
      const at = target < 0 ? 0 : end;
      if (isFinite(at) && Math.abs(s.currentTime - at) > DRIFT_SEEK) { s.currentTime = at; }
      return;
    }
    const drift = s.currentTime - target;
    if (hard || Math.abs(drift) > DRIFT_SEEK) {
      s.currentTime = target;
      s.playbackRate = 1;
    } else if (Math.abs(drift) > DRIFT_EASE) {
      s.playbackRate = Math.max(0.8, Math.min(1.2, 1 - drift)); // behind: faster
    } else {
      s.playbackRate = 1;
    }
    if (p.master.paused !== s.paused) {
      if (p.master.paused) { s.pause(); } else { s.play().catch(function () {}); }
    }
  }
  p.drift = function () { return p.slave ? p.slave.currentTime - (now() - p.offset) : 0; };

  function sync() { follow(false); draw(); }

  for (const m of [el.audio, el.video]) {
    m.addEventListener('loadedmetadata', function () {
      if (m !== p.master) { return; }
      draw();
      learnDuration(p.sources.get(m), m.duration);
    });
    m.addEventListener('timeupdate', function () { if (m === p.master) { draw(); } });
    m.addEventListener('play', function () { if (m === p.master) { follow(true); label(); } });
    m.addEventListener('pause', function () { if (m === p.master) { follow(false); label(); } });
    m.addEventListener('seeking', function () { if (m === p.master) { follow(true); } });
    m.addEventListener('ended', function () { if (m === p.master) { label(); } });
    m.addEventListener('error', function () { renew(m); });
  }

  // A ticket lasts minutes: when a Range request is refused, get a new one and resume.
  async function renew(m) {
    const rec = p.sources.get(m);
    const last = p.renewedAt.get(m) || 0;
    if (!rec || !token || Date.now() - last < 10000) {
      if (rec) { say('Cannot play ' + rec.id + ': the server refused it or it is damaged.'); }
      return;
    }
    p.renewedAt.set(m, Date.now());
    const at = m.currentTime;
    const playing = p.master && !p.master.paused;
    try {
      m.src = await ticket(rec);
    } catch (err) { failed(err); return; }
    m.addEventListener('loadedmetadata', function () {
      m.currentTime = at;
      if (playing && m === p.master) { m.play().catch(function () {}); }
    }, { once: true });
  }

  // A container's length is inside the encrypted body (not in the listing): once the
  // media element has read it, show it in the list and the recording's line too.
  function learnDuration(rec, seconds) {
    if (!rec || !isFinite(seconds) || rec.duration_ms !== null) { return; }
    rec.duration_ms = Math.round(seconds * 1000);
    const it = p.interaction;
    const td = it && durations.get(it);
    if (td && it.duration_ms === null) { td.textContent = clockText(seconds); }
    const li = el.members.querySelector('li[data-id="' + CSS.escape(rec.id) + '"] .facts');
    if (li) { li.textContent = factsText(rec); }
  }

  function label() {
    const playing = p.master && !p.master.paused;
    el.play.textContent = playing ? 'Pause' : 'Play';
    el.play.setAttribute('aria-label', playing ? 'Pause' : 'Play');
  }

  el.play.addEventListener('click', toggle);
  el.close.addEventListener('click', function () {
    const back = p.opener;
    stopPlayer();
    if (back && document.contains(back)) { back.focus(); }
  });
  el.wave.addEventListener('click', function (ev) {
    const r = el.wave.getBoundingClientRect();
    seek(((ev.clientX - r.left) / r.width) * duration());
  });
  el.timeline.addEventListener('keydown', function (ev) {
    if (ev.key === 'Home') { seek(0); ev.preventDefault(); }
    if (ev.key === 'End') { seek(duration()); ev.preventDefault(); }
  });
  document.addEventListener('keydown', function (ev) {
    if (el.player.hidden || !p.master || ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    const tag = ev.target && ev.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') { return; }
    if (ev.key === ' ' || ev.code === 'Space') {
      if (tag === 'BUTTON' || tag === 'A') { return; } // Space presses the focused button
      ev.preventDefault();
      toggle();
    } else if (ev.key === 'ArrowLeft') {
      ev.preventDefault();
      seek(now() - 5);
    } else if (ev.key === 'ArrowRight') {
      ev.preventDefault();
      seek(now() + 5);
    }
  });

  // The waveform of the call audio, decoded here from the decrypted stream (the
  // server caches no plaintext: its answers are Cache-Control: no-store).
  async function waveform(rec, gen) {
    if (rec.size !== null && rec.size > WAVE_MAX_BYTES) {
      el.waveNote.textContent = 'No waveform: the call is too long to draw here (' +
        humanSize(rec.size) + ').';
      return;
    }
    el.waveNote.textContent = 'Drawing the waveform…';
    try {
      const url = await ticket(rec);
      const r = await fetch(url, { credentials: 'omit', cache: 'no-store' });
      if (!r.ok) { throw new Error('the server answered ' + r.status); }
      const data = await r.arrayBuffer();
      const ctx = new OfflineAudioContext(1, 1, 8000);
      const audio = await ctx.decodeAudioData(data);
      if (gen !== p.generation) { return; }
      p.peaks = peaks(audio, el.wave.width);
      el.waveNote.textContent = '';
      draw();
    } catch (err) {
      if (gen === p.generation) {
        el.waveNote.textContent = 'No waveform: ' + (err.message || 'the audio cannot be decoded here') + '.';
      }
    }
  }

  function peaks(audio, n) {
    const out = new Float32Array(n);
    const chans = [];
    for (let c = 0; c < audio.numberOfChannels; c++) { chans.push(audio.getChannelData(c)); }
    const per = Math.max(1, Math.floor(audio.length / n));
    for (let i = 0; i < n; i++) {
      let max = 0;
      const from = i * per;
      const to = Math.min(audio.length, from + per);
      for (const ch of chans) {
        for (let j = from; j < to; j++) { const v = Math.abs(ch[j]); if (v > max) { max = v; } }
      }
      out[i] = max;
    }
    return out;
  }

  function draw() {
    const c = el.wave;
    const g = c.getContext('2d');
    const w = c.width;
    const h = c.height;
    const d = duration();
    const t = now();
    const x = d ? Math.round((t / d) * w) : 0;
    g.clearRect(0, 0, w, h);
    g.fillStyle = '#eef1f5';
    g.fillRect(0, 0, w, h);
    if (p.peaks) {
      for (let i = 0; i < p.peaks.length; i++) {
        const bar = Math.max(1, p.peaks[i] * (h - 8));
        g.fillStyle = i < x ? '#1d5fbf' : '#8aa4c8';
        g.fillRect(i, (h - bar) / 2, 1, bar);
      }
    } else {
      g.fillStyle = '#b8c4d6';
      g.fillRect(0, h / 2 - 1, w, 2);
      g.fillStyle = '#1d5fbf';
      g.fillRect(0, h / 2 - 2, x, 4);
    }
    g.fillStyle = '#c0392b';
    g.fillRect(Math.min(w - 2, x), 0, 2, h);
    el.clock.textContent = clockText(t) + ' / ' + clockText(d);
    el.timeline.setAttribute('aria-valuemax', String(Math.round(d)));
    el.timeline.setAttribute('aria-valuenow', String(Math.round(t)));
    el.timeline.setAttribute('aria-valuetext', clockText(t) + ' of ' + clockText(d));
  }

  showSignIn('');
})();
