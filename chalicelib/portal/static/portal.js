/* Ringback portal: one small vanilla script, no build step.
 *
 * Safety rule for this file: untrusted text (names, URLs, payloads, error messages) only ever
 * reaches the page through textContent / createTextNode (the h() helper below). No HTML string
 * is ever parsed, and no untrusted value becomes an href or an event handler.
 *
 * The page calls the API's own routes; the browser sends the session cookie, and every write
 * carries the session's CSRF token in X-CSRF-Token.
 */
'use strict';

(() => {
  const PREFIX = document.body.dataset.prefix || '';
  const state = { session: null, timers: [] };
  const FINAL = new Set(['delivered', 'failed', 'skipped']);

  // ------------------------------------------------------------------ DOM helpers

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on') && typeof value === 'function') {
        node.addEventListener(name.slice(2), value);
      } else if (name === 'class') {
        node.className = value;
      } else {
        node.setAttribute(name, value === true ? '' : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const svgNS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const node = document.createElementNS(svgNS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function page() { return document.getElementById('page'); }

  function flash(message, isError) {
    const box = document.getElementById('flash');
    box.replaceChildren(h('div', { class: isError ? 'msg error' : 'msg' }, message));
  }

  function errorText(result) {
    const d = result.data;
    if (d && typeof d === 'object') {
      if (d.message) return `${result.status}: ${d.message}`;
      if (d.detail) return `${result.status}: ${d.detail}`;
      if (d.error && typeof d.error === 'object') return `${result.status}: ${JSON.stringify(d.error)}`;
      if (d.error) return `${result.status}: ${d.error}`;
      if (d.errorMessage) return `${result.status}: ${d.errorMessage}`;
    }
    return `${result.status}: ${typeof d === 'string' ? d : JSON.stringify(d)}`;
  }

  function place(url) {
    try { const u = new URL(url); return u.origin + u.pathname; } catch (e) { return String(url); }
  }

  function canWrite() { return !!state.session && state.session.rights === 'manage'; }

  function button(label, onclick, cls, write) {
    const disabled = write !== false && !canWrite();
    return h('button', {
      type: 'button', class: cls || '', onclick, disabled,
      title: disabled ? 'read-only session' : null,
    }, label);
  }

  function badge(status) { return h('span', { class: `badge status-${status}` }, status); }

  function when(value) { return value ? String(value).replace('T', ' ').replace('Z', ' UTC') : ''; }

  function clearTimers() { state.timers.forEach(clearTimeout); state.timers = []; }

  // ------------------------------------------------------------------ API

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') headers['X-CSRF-Token'] = state.session ? state.session.csrf_token : '';
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(PREFIX + path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (e) { data = text; } }
    return { ok: response.ok, status: response.status, data };
  }

  function tenantPath(template) {
    return template.replace('{t}', encodeURIComponent(state.session.tenant_id));
  }

  const CAMPAIGN = '/companies/{t}/campaigns/config';
  const NOTIF = '/rest/api/v1.3/notifications';
  const CALLNOTIFY = '/customer/{t}/callnotify';

  function showSecret(what, secret) {
    const container = document.getElementById('secret-slot');
    if (!container) return;
    container.replaceChildren(h('div', { class: 'secret', 'data-testid': 'secret' },
      h('strong', {}, `New signing secret for ${what}. `),
      'Copy it now: it is shown once and cannot be read again. ',
      h('code', { class: 'mono', 'data-testid': 'secret-value' }, secret)));
  }

  function formValues(form) {
    const values = {};
    for (const [name, value] of new FormData(form).entries()) {
      if (String(value).trim() !== '') values[name] = String(value).trim();
    }
    return values;
  }

  function field(label, name, attrs) {
    return h('label', {}, label, h('input', Object.assign({ name }, attrs || {})));
  }

  function select(label, name, options, value) {
    return h('label', {}, label, h('select', { name },
      options.map((o) => h('option', { value: o, selected: o === value }, o))));
  }

  // ------------------------------------------------------------------ registrations

  async function registrations() {
    const root = h('div', {}, h('h1', {}, 'Registrations'));
    const secretBox = h('div', { id: 'secret-slot' });
    root.append(secretBox);
    page().replaceChildren(root);
    const [camp, notif, subs, sched, notifiers] = await Promise.all([
      api('GET', tenantPath(`${CAMPAIGN}/callbacks`)),
      api('GET', `${NOTIF}/callbacks`),
      api('GET', `${NOTIF}/subscriptions`),
      api('GET', '/portal/api/scheduled'),
      api('GET', tenantPath(CALLNOTIFY)),
    ]);
    root.append(campaignSection(camp));
    root.append(notificationSection(notif, subs));
    root.append(scheduledSection(sched));
    root.append(callnotifySection(notifiers));
  }

  function campaignSection(result) {
    const section = h('section', { id: 'campaign' }, h('h2', {}, 'Campaign callback registrations'));
    const form = h('form', { class: 'card', id: 'campaign-create' },
      field('event type', 'event_type', { required: true, placeholder: 'ack_participant_added' }),
      field('campaign id (name)', 'campaign_id', { placeholder: 'optional' }),
      field('destination URL', 'destination_url', { required: true, type: 'url' }),
      field('backup URL', 'backup_url', { type: 'url', placeholder: 'optional' }),
      select('method', 'destination_method', ['POST', 'PUT', 'GET'], 'POST'),
      h('div', {}, button('Create registration', null, '', true)));
    form.querySelector('button').type = 'submit';
    const byId = {};
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const values = formValues(form);
      const replaces = form.dataset.replaces ? byId[form.dataset.replaces] : null;
      if (replaces) {
        // The campaign family has no update (its seed has none): an edit ends the registration
        // and creates its successor (a new id and signing secret). If the successor is refused,
        // the original is created again from its own fields.
        const ended = await api('DELETE', tenantPath(`${CAMPAIGN}/callbacks/${replaces.callback_id}`));
        if (!ended.ok) { flash(errorText(ended), true); return; }
      }
      const created = await api('POST', tenantPath(`${CAMPAIGN}/callbacks`), values);
      if (!created.ok) {
        if (replaces) {
          const restore = { event_type: replaces.event_type, destination_url: replaces.destination_url,
            destination_method: replaces.destination_method, content_type: replaces.content_type };
          if (replaces.campaign_id) restore.campaign_id = replaces.campaign_id;
          if (replaces.backup_url) restore.backup_url = replaces.backup_url;
          if (replaces.end_date) restore.end_date = replaces.end_date;
          const back = await api('POST', tenantPath(`${CAMPAIGN}/callbacks`), restore);
          await registrations();
          flash(`${errorText(created)} (the original was restored as ${back.ok ? back.data.callback_id : 'nothing: ' + errorText(back)})`, true);
          return;
        }
        flash(errorText(created), true); return;
      }
      await registrations();
      flash(replaces
        ? `Registration ${replaces.callback_id} replaced by ${created.data.callback_id}.`
        : `Registration ${created.data.callback_id} created.`);
      showSecret(`registration ${created.data.callback_id}`, created.data.signing_secret);
    });
    section.append(form);
    if (!result.ok) { section.append(h('p', { class: 'bad' }, errorText(result))); return section; }
    const rows = result.data.map((r) => h('tr', { 'data-callback-id': r.callback_id },
      h('td', { class: 'name' }, r.campaign_id || h('span', { class: 'muted' }, '(any campaign)')),
      h('td', {}, r.event_type),
      h('td', { class: 'url' }, r.destination_url, r.backup_url ? h('div', { class: 'backup' }, 'backup: ', r.backup_url) : null),
      h('td', {}, when(r.start_date), ' → ', r.end_date ? when(r.end_date) : 'open'),
      h('td', {}, r.disabled_reason
        ? h('span', { class: 'bad' }, 'disabled: ', r.disabled_reason)
        : badge(r.active ? 'active' : 'inactive')),
      h('td', {},
        r.disabled_reason ? button('Re-enable', async () => {
          const res = await api('POST', tenantPath(`${CAMPAIGN}/callbacks/${r.callback_id}/enable`));
          if (!res.ok) { flash(errorText(res), true); return; }
          await registrations(); flash('Registration re-enabled.');
        }) : null,
        button('Edit', () => {
          byId[r.callback_id] = r;
          form.dataset.replaces = r.callback_id;
          for (const name of ['event_type', 'campaign_id', 'destination_url', 'backup_url']) {
            form.querySelector(`[name=${name}]`).value = r[name] || '';
          }
          form.querySelector('[name=destination_method]').value = r.destination_method;
          form.querySelector('button[type=submit]').textContent = 'Save (replaces the registration)';
          form.scrollIntoView();
        }, 'secondary'),
        button('Send test event', async () => {
          const res = await api('POST', tenantPath(`${CAMPAIGN}/callback_events/test`),
            { event_type: r.event_type, campaign_id: r.campaign_id || undefined });
          if (!res.ok) { flash(errorText(res), true); return; }
          flash(`Test event ${res.data.event_id} queued (${res.data.deliveries} deliveries).`);
        }, 'secondary'),
        button('Rotate secret', async () => {
          const res = await api('POST', tenantPath(`${CAMPAIGN}/callbacks/${r.callback_id}/secret/rotate`));
          if (!res.ok) { flash(errorText(res), true); return; }
          showSecret(`registration ${r.callback_id}`, res.data.signing_secret);
        }, 'secondary'),
        button('End', async () => {
          const res = await api('DELETE', tenantPath(`${CAMPAIGN}/callbacks/${r.callback_id}`));
          if (!res.ok) { flash(errorText(res), true); return; }
          await registrations(); flash('Registration ended.');
        }, 'danger'))));
    section.append(h('table', { id: 'campaign-list' },
      h('thead', {}, h('tr', {}, ['Campaign', 'Event type', 'Destination', 'Window', 'State', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No registrations yet.')))));
    return section;
  }

  function notificationSection(result, subs) {
    const section = h('section', { id: 'notification' }, h('h2', {}, 'Notification callbacks and subscriptions'));
    const submit = h('button', { type: 'submit', disabled: !canWrite() }, 'Create callback');
    const form = h('form', { class: 'card', id: 'notification-create' },
      field('name', 'name', { required: true }),
      field('URL', 'url', { required: true, type: 'url' }),
      field('backup URL', 'backupUrl', { type: 'url' }),
      field('batch size', 'batchSize', { type: 'number', min: 1, value: 10, required: true }),
      field('user name', 'userName', { required: true }),
      field('password', 'password', { required: true, type: 'password', autocomplete: 'off' }),
      h('div', {}, submit));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const v = formValues(form);
      const editing = form.dataset.editing;
      const body = { name: v.name, url: v.url, batchSize: Number(v.batchSize),
        authentication: { type: 'B', data: { userName: v.userName, password: v.password } } };
      if (v.backupUrl) body.backupUrl = v.backupUrl;
      const res = editing
        ? await api('PUT', `${NOTIF}/callbacks/${encodeURIComponent(editing)}`, body)
        : await api('POST', `${NOTIF}/callbacks`, body);
      if (!res.ok) { flash(errorText(res), true); return; }
      await registrations();
      if (editing) { flash(`Callback ${editing} updated.`); return; }
      showSecret(`callback ${res.data.name}`, res.data.signing_secret);
    });
    section.append(form);
    if (!result.ok) { section.append(h('p', { class: 'bad' }, errorText(result))); return section; }
    const byCallback = {};
    const subList = subs.ok && Array.isArray(subs.data) ? subs.data : [];
    for (const sub of subList) {
      (byCallback[sub.callbackName] = byCallback[sub.callbackName] || []).push(sub);
    }
    const list = Array.isArray(result.data) ? result.data : [];
    const subscriptionsOf = (name) => {
      const found = byCallback[name] || [];
      if (!found.length) return h('span', { class: 'muted' }, 'none');
      return h('ul', {}, found.map((sub) => h('li', { 'data-subscription': sub.name },
        h('span', { class: 'name' }, sub.name), ': ', (sub.eventNames || []).join(', '), ' ',
        button('Unsubscribe', async () => {
          const res = await api('DELETE', `${NOTIF}/subscriptions/${encodeURIComponent(sub.name)}`);
          if (!res.ok) { flash(errorText(res), true); return; }
          await registrations(); flash(`Subscription ${sub.name} deleted.`);
        }, 'danger'))));
    };
    const rows = list.map((c) => h('tr', { 'data-callback-name': c.name },
      h('td', { class: 'name' }, c.name),
      h('td', { class: 'url' }, c.url, c.backupUrl ? h('div', { class: 'backup' }, 'backup: ', c.backupUrl) : null),
      h('td', {}, subscriptionsOf(c.name)),
      h('td', {}, c.disabledReason ? h('span', { class: 'bad' }, 'disabled: ', c.disabledReason) : badge('active')),
      h('td', {},
        button(c.disabledReason ? 'Re-enable (edit)' : 'Edit', () => {
          // the family's rule: an update (which carries the credentials) enables it again
          form.dataset.editing = c.name;
          form.querySelector('[name=name]').value = c.name;
          form.querySelector('[name=url]').value = c.url || '';
          form.querySelector('[name=backupUrl]').value = c.backupUrl || '';
          form.querySelector('[name=batchSize]').value = c.batchSize || 10;
          submit.textContent = `Save ${c.name} (enter the credentials again)`;
          form.scrollIntoView();
        }, 'secondary'),
        button('Rotate secret', async () => {
          const res = await api('POST', `${NOTIF}/callbacks/${encodeURIComponent(c.name)}/secret/rotate`);
          if (!res.ok) { flash(errorText(res), true); return; }
          showSecret(`callback ${c.name}`, res.data.signing_secret);
        }, 'secondary'),
        button('Delete', async () => {
          const res = await api('DELETE', `${NOTIF}/callbacks/${encodeURIComponent(c.name)}`);
          if (!res.ok) { flash(errorText(res), true); return; }
          await registrations(); flash('Callback deleted.');
        }, 'danger'))));
    section.append(h('table', { id: 'notification-list' },
      h('thead', {}, h('tr', {}, ['Name', 'URL', 'Subscriptions', 'State', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No callbacks.')))));
    if (list.length) {
      const subForm = h('form', { class: 'card', id: 'subscription-create' },
        field('subscription name', 'name', { required: true }),
        select('callback', 'callbackName', list.map((c) => c.name), list[0].name),
        field('event names (comma separated)', 'eventNames', { required: true, placeholder: 'SMS_FAILED, EMAIL_BOUNCED' }),
        h('div', {}, h('button', { type: 'submit', disabled: !canWrite() }, 'Subscribe')));
      subForm.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const v = formValues(subForm);
        const body = { name: v.name, callbackName: v.callbackName,
          eventNames: (v.eventNames || '').split(',').map((e) => e.trim()).filter(Boolean) };
        const res = await api('POST', `${NOTIF}/subscriptions`, body);
        if (!res.ok) { flash(errorText(res), true); return; }
        await registrations(); flash(`Subscription ${v.name} created.`);
      });
      section.append(subForm);
    }
    return section;
  }

  function scheduledSection(result) {
    const section = h('section', { id: 'scheduled-registrations' }, h('h2', {}, 'Scheduled callbacks'),
      h('p', { class: 'muted' }, 'Create one and see the upcoming firings on the Scheduled page.'));
    if (!result.ok) { section.append(h('p', { class: 'bad' }, errorText(result))); return section; }
    const rows = result.data.callbacks.map((c) => h('tr', { 'data-callback-id': c.callback_id },
      h('td', { class: 'mono' }, c.callback_id),
      h('td', { class: 'url' }, c.callback_url),
      h('td', {}, when(c.timestamp)),
      h('td', {}, c.repeat ? `${c.repeat.type}: every ${c.repeat.interval} ${c.repeat.interval_unit}` : 'once'),
      h('td', {}, button('Cancel', async () => {
        const r = await api('POST', `/portal/api/scheduled/${encodeURIComponent(c.callback_id)}/cancel`);
        if (!r.ok) { flash(errorText(r), true); return; }
        await registrations(); flash(`Callback ${c.callback_id} cancelled.`);
      }, 'danger'))));
    section.append(h('table', {},
      h('thead', {}, h('tr', {}, ['Id', 'URL', 'Next firing', 'Repeat', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No live scheduled callbacks.')))));
    if (result.data.next_cursor) section.append(h('p', { class: 'muted' }, 'More on the Scheduled page.'));
    return section;
  }

  function callnotifySection(result) {
    const section = h('section', { id: 'callnotify' }, h('h2', {}, 'Call notifiers'));
    const submit = h('button', { type: 'submit', disabled: !canWrite() }, 'Create notifier');
    const form = h('form', { class: 'card', id: 'callnotify-create' },
      field('URL', 'url', { required: true }),
      select('method', 'method', ['POSTJSON', 'POSTARGS', 'POSTXML1', 'POSTXML2', 'GET1', 'GET2'], 'POSTJSON'),
      select('selection', 'selection', ['ALL', 'SIP', 'MVNO'], 'ALL'),
      h('div', {}, submit));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const editing = form.dataset.editing;
      const res = editing
        ? await api('PUT', tenantPath(`${CALLNOTIFY}/${encodeURIComponent(editing)}`), formValues(form))
        : await api('POST', tenantPath(CALLNOTIFY), formValues(form));
      if (!res.ok) { flash(errorText(res), true); return; }
      await registrations();
      if (editing) { flash(`Notifier ${editing} updated.`); return; }
      showSecret(`notifier ${res.data._id}`, res.data.signing_secret);
    });
    section.append(form);
    if (!result.ok) { section.append(h('p', { class: 'bad' }, errorText(result))); return section; }
    const rows = (Array.isArray(result.data) ? result.data : []).map((n) => {
      const item = tenantPath(`${CALLNOTIFY}/${encodeURIComponent(n._id)}`);
      return h('tr', { 'data-notify-id': n._id },
        h('td', { class: 'mono' }, n._id),
        h('td', { class: 'url' }, n.url),
        h('td', {}, n.method, ' / ', n.selection),
        h('td', {}, n.disabled_reason ? h('span', { class: 'bad' }, 'disabled: ', n.disabled_reason) : badge('active')),
        h('td', {},
          n.disabled_reason ? button('Re-enable', async () => {
            // the family's rule: any update of the notifier enables it again
            const res = await api('PUT', item, {});
            if (!res.ok) { flash(errorText(res), true); return; }
            await registrations(); flash(`Notifier ${n._id} re-enabled.`);
          }) : null,
          button('Edit', () => {
            form.dataset.editing = n._id;
            form.querySelector('[name=url]').value = n.url;
            form.querySelector('[name=method]').value = n.method;
            form.querySelector('[name=selection]').value = n.selection;
            submit.textContent = `Save notifier ${n._id}`;
            form.scrollIntoView();
          }, 'secondary'),
          button('Rotate secret', async () => {
            const res = await api('POST', `${item}/secret/rotate`);
            if (!res.ok) { flash(errorText(res), true); return; }
            showSecret(`notifier ${n._id}`, res.data.signing_secret);
          }, 'secondary'),
          button('Delete', async () => {
            const res = await api('DELETE', item);
            if (!res.ok) { flash(errorText(res), true); return; }
            await registrations(); flash('Notifier deleted.');
          }, 'danger')));
    });
    section.append(h('table', { id: 'callnotify-list' },
      h('thead', {}, h('tr', {}, ['Id', 'URL', 'Method / selection', 'State', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No call notifiers.')))));
    return section;
  }

  // ------------------------------------------------------------------ deliveries

  const STATUSES = ['all', 'pending', 'retrying', 'delivered', 'failed', 'skipped'];
  const FAMILIES = ['', 'campaign', 'notification', 'scheduled', 'callnotify'];

  async function deliveries() {
    const root = h('div', {}, h('h1', {}, 'Deliveries'));
    const form = h('form', { class: 'card', id: 'delivery-filter' },
      select('status', 'status', STATUSES, 'all'),
      select('family', 'family', FAMILIES, ''),
      field('target (id or URL)', 'target'),
      field('since', 'since', { placeholder: '2026-01-01T00:00:00Z' }),
      field('until', 'until', { placeholder: '2026-01-02T00:00:00Z' }),
      h('div', {}, h('button', { type: 'submit' }, 'Apply')));
    const list = h('div', { id: 'delivery-list' });
    const detail = h('div', { id: 'delivery-detail' });
    root.append(form, list, detail);
    page().replaceChildren(root);
    form.addEventListener('submit', (ev) => { ev.preventDefault(); loadDeliveries(form, list, detail, null); });
    await loadDeliveries(form, list, detail, null);
  }

  async function loadDeliveries(form, list, detail, cursor) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(formValues(form))) params.set(name, value);
    params.set('limit', '50');
    if (cursor) params.set('cursor', cursor);
    const res = await api('GET', `/deliveries?${params}`);
    if (!res.ok) { list.replaceChildren(h('p', { class: 'bad' }, errorText(res))); return; }
    const found = res.data.deliveries || [];
    const rows = found.map((d) => h('tr', {
      class: 'clickable', 'data-delivery-id': d.delivery_id,
      onclick: () => openDelivery(d.delivery_id, detail),
    },
    h('td', { class: 'mono' }, d.delivery_id),
    h('td', {}, d.family),
    h('td', { class: 'url' }, d.target),
    h('td', {}, badge(d.status), d.replayed_by ? h('span', { class: 'muted' }, ' replayed') : null),
    h('td', {}, String((d.attempts || []).length)),
    h('td', {}, when(d.created_at))));
    const isReplayable = (d) => (d.status === 'failed' || d.status === 'skipped') && !d.replayed_by;
    const replayable = found.filter(isReplayable);
    const progress = h('span', { id: 'replay-progress' });
    const status = form.querySelector('[name=status]').value;
    const pager = h('div', { class: 'pager' },
      res.data.next_cursor ? h('button', { type: 'button', class: 'secondary',
        onclick: () => loadDeliveries(form, list, detail, res.data.next_cursor) }, 'Next page') : null,
      ['all', 'failed', 'skipped'].includes(status) ? button('Replay every failed/skipped delivery matching the filter', async () => {
        // Walk the filter's pages with the API's cursor, then replay one by one, so the bar
        // shows real progress (each replay is the API's own POST /deliveries/{id}/replay).
        const label = h('span', {}, ' finding deliveries...');
        progress.replaceChildren(label);
        const targets = [];
        let next = null;
        do {
          const query = new URLSearchParams(params);
          query.delete('cursor');
          query.set('limit', '200');
          if (next) query.set('cursor', next);
          const pageRes = await api('GET', `/deliveries?${query}`);
          if (!pageRes.ok) { flash(errorText(pageRes), true); return; }
          targets.push(...(pageRes.data.deliveries || []).filter(isReplayable));
          next = pageRes.data.next_cursor;
        } while (next && targets.length < 1000);
        const bar = h('progress', { max: targets.length || 1, value: 0, 'data-testid': 'replay-bar' });
        progress.replaceChildren(bar, label);
        let done = 0; let failed = 0;
        label.textContent = ` 0 / ${targets.length}`;
        for (const d of targets) {
          const r = await api('POST', `/deliveries/${encodeURIComponent(d.delivery_id)}/replay`);
          if (!r.ok) failed += 1;
          done += 1; bar.value = done; label.textContent = ` ${done} / ${targets.length}`;
        }
        flash(`Replayed ${done - failed} of ${targets.length}${failed ? ` (${failed} refused)` : ''}.`, failed > 0);
      }, 'secondary') : null,
      replayable.length ? h('span', { class: 'muted' }, ` ${replayable.length} replayable on this page`) : null,
      progress);
    list.replaceChildren(h('table', { id: 'deliveries' },
      h('thead', {}, h('tr', {}, ['Delivery', 'Family', 'Target', 'Status', 'Attempts', 'Created'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No deliveries match.')))),
    pager);
  }

  async function openDelivery(deliveryId, detail) {
    clearTimers();
    const res = await api('GET', `/deliveries/${encodeURIComponent(deliveryId)}`);
    if (!res.ok) { detail.replaceChildren(h('p', { class: 'bad' }, errorText(res))); return; }
    const d = res.data;
    const attempts = (d.attempts || []).map((a, i) => {
      // The attempts log masks secrets in a URL's query (and user info): compare where the
      // request went (origin and path), not the whole string.
      const isBackup = place(a.url) !== place(d.target);
      const good = a.status_code !== undefined && a.status_code >= 200 && a.status_code < 300;
      return h('li', { class: good ? 'ok' : 'bad', 'data-attempt': i + 1 },
        h('strong', {}, `#${i + 1} `), when(a.at), ' ',
        h('span', { class: isBackup ? 'backup' : 'primary' }, isBackup ? '[backup] ' : '[primary] '),
        h('span', { class: 'mono' }, a.url), ' → ',
        a.status_code !== undefined ? `HTTP ${a.status_code}` : `error: ${a.error || 'unknown'}`,
        ` (${a.duration_ms} ms)`);
    });
    const card = h('div', { class: 'card', 'data-testid': 'delivery', 'data-status': d.status },
      h('h2', {}, 'Delivery ', h('span', { class: 'mono' }, d.delivery_id), ' ', badge(d.status)),
      h('p', {}, `${d.family} → `, h('span', { class: 'mono' }, d.target)),
      d.failure_reason ? h('p', { class: 'bad' }, 'Failure: ', d.failure_reason) : null,
      d.next_attempt_at ? h('p', {}, 'Next attempt at ', when(d.next_attempt_at)) : null,
      d.replay_of ? h('p', {}, 'Replay of ', h('a', { href: '#deliveries', onclick: () => openDelivery(d.replay_of, detail) }, d.replay_of)) : null,
      d.replayed_by ? h('p', {}, 'Replayed as ', h('a', { href: '#deliveries', 'data-testid': 'replayed-by', onclick: () => openDelivery(d.replayed_by, detail) }, d.replayed_by)) : null,
      h('h3', {}, 'Attempts'),
      attempts.length ? h('ol', { class: 'timeline' }, attempts) : h('p', { class: 'muted' }, 'No attempt yet.'),
      (d.status === 'failed' || d.status === 'skipped') && !d.replayed_by ? button('Replay', async () => {
        const r = await api('POST', `/deliveries/${encodeURIComponent(d.delivery_id)}/replay`);
        if (!r.ok) { flash(errorText(r), true); return; }
        flash(`Replayed as ${r.data.delivery_id}.`);
        await openDelivery(r.data.delivery_id, detail);
      }) : null,
      button('Refresh', () => openDelivery(d.delivery_id, detail), 'secondary', false));
    detail.replaceChildren(card);
    if (!FINAL.has(d.status)) {
      state.timers.push(setTimeout(() => {
        if (document.body.contains(card)) openDelivery(d.delivery_id, detail);
      }, 1500));
    }
  }

  // ------------------------------------------------------------------ scheduled

  async function scheduled(cursor) {
    const root = h('div', {}, h('h1', {}, 'Scheduled'), h('div', { id: 'secret-slot' }));
    const form = h('form', { class: 'card', id: 'scheduled-create' },
      field('callback URL', 'callback_url', { required: true, type: 'url' }),
      field('first firing (ISO 8601 with zone)', 'callback_time', {
        required: true, value: new Date(Date.now() + 3600000).toISOString().replace(/\.\d+Z$/, 'Z'),
      }),
      select('repeat', 'callback_repeat', ['0', '1'], '0'),
      select('repeat type', 'callback_repeat_type', ['interval', 'immediate'], 'interval'),
      select('unit', 'callback_repeat_interval_unit', ['minutes', 'hours', 'days', 'months', 'years', 'seconds'], 'hours'),
      field('interval', 'callback_repeat_interval', { type: 'number', min: 1, value: 1 }),
      h('div', {}, h('button', { type: 'submit', disabled: !canWrite() }, 'Schedule callback')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const made = await api('POST', '/portal/api/scheduled', formValues(form));
      if (!made.ok) { flash(errorText(made), true); return; }
      await scheduled(null);
      flash(`Callback ${made.data.callback_id} scheduled for ${when(made.data.timestamp)}.`);
      showSecret(`scheduled callback ${made.data.callback_id}`, made.data.signing_secret);
    });
    root.append(form);
    page().replaceChildren(root);
    const res = await api('GET', `/portal/api/scheduled${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (!res.ok) { root.append(h('p', { class: 'bad' }, errorText(res))); return; }
    const callbacks = res.data.callbacks;
    if (!callbacks.length) { root.append(h('p', { class: 'muted' }, 'No upcoming firings.')); return; }
    const times = callbacks.map((c) => Date.parse(c.timestamp)).filter((t) => !Number.isNaN(t));
    const start = Date.now();
    const last = Math.max(...times, start + 60000);
    const end = start + (last - start) * 1.1;
    const width = 900; const left = 200; const right = width - 30; const rowH = 26;
    const xOf = (t) => left + ((t - start) / (end - start)) * (right - left);
    const chart = s('svg', { class: 'chart', width, height: callbacks.length * rowH + 40, role: 'img', 'aria-label': 'upcoming firings' });
    for (let i = 0; i <= 4; i += 1) {  // a time axis: now, then quarters
      const t = start + ((end - start) * i) / 4;
      const x = xOf(t);
      chart.append(s('line', { x1: x, x2: x, y1: 20, y2: callbacks.length * rowH + 30, stroke: '#eef0f4' }));
      const label = i === 0 ? 'now' : new Date(t).toISOString().slice(5, 16).replace('T', ' ');
      chart.append(s('text', { x: x - (i === 4 ? 60 : 0), y: 14, 'font-size': 10, fill: '#5c6577' }, label));
    }
    const STEP = { seconds: 1e3, minutes: 6e4, hours: 36e5, days: 864e5 };
    callbacks.forEach((c, i) => {
      const t = Date.parse(c.timestamp);
      const y = 30 + i * rowH;
      chart.append(s('line', { x1: left, x2: right, y1: y + 8, y2: y + 8, stroke: '#d9dee8' }));
      chart.append(s('text', { x: 8, y: y + 12, 'font-size': 11 }, c.callback_id.slice(-8) + ' ' + (c.repeat ? `every ${c.repeat.interval} ${c.repeat.interval_unit}` : 'once')));
      chart.append(s('circle', { cx: xOf(t), cy: y + 8, r: 6, fill: '#2456d6' }));
      // later firings of an interval series, as far as the axis goes (at most 50 marks)
      const step = c.repeat && c.repeat.type === 'interval' ? (STEP[c.repeat.interval_unit] || 0) * c.repeat.interval : 0;
      for (let k = 1, next = t + step; step > 0 && next <= end && k <= 50; k += 1, next += step) {
        chart.append(s('circle', { cx: xOf(next), cy: y + 8, r: 4, fill: 'none', stroke: '#2456d6' }));
      }
    });
    root.append(chart);
    const rows = callbacks.map((c) => h('tr', { 'data-callback-id': c.callback_id },
      h('td', {}, when(c.timestamp)),
      h('td', { class: 'url' }, c.callback_url),
      h('td', {}, c.repeat ? `${c.repeat.type}: every ${c.repeat.interval} ${c.repeat.interval_unit}` : 'once'),
      h('td', {}, String(c.fired_count)),
      h('td', {}, button('Cancel', async () => {
        const r = await api('POST', `/portal/api/scheduled/${encodeURIComponent(c.callback_id)}/cancel`);
        if (!r.ok) { flash(errorText(r), true); return; }
        await scheduled(cursor); flash(`Callback ${c.callback_id} cancelled.`);
      }, 'danger'))));
    root.append(h('table', { id: 'scheduled' },
      h('thead', {}, h('tr', {}, ['Next firing', 'URL', 'Repeat', 'Fired', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows)));
    if (res.data.next_cursor) root.append(h('button', { type: 'button', class: 'secondary', onclick: () => scheduled(res.data.next_cursor) }, 'Next page'));
  }

  // ------------------------------------------------------------------ health

  async function health() {
    const root = h('div', {}, h('h1', {}, 'Health'));
    page().replaceChildren(root);
    const res = await api('GET', '/portal/api/health');
    if (!res.ok) { root.append(h('p', { class: 'bad' }, errorText(res))); return; }
    const targets = res.data.targets;
    if (!targets.length) { root.append(h('p', { class: 'muted' }, 'No finished deliveries in the last 7 days.')); return; }
    if (res.data.capped) root.append(h('p', { class: 'warn' }, 'Busy tenant: figures cover the most recent deliveries only.'));
    const width = 900; const rowH = 44; const barX = 300; const barW = 520;
    const chart = s('svg', { class: 'chart', width, height: targets.length * rowH + 20, role: 'img', 'aria-label': 'success rate per target' });
    targets.forEach((t, i) => {
      const y = 10 + i * rowH;
      chart.append(s('text', { x: 8, y: y + 14, 'font-size': 11 }, `${t.family}: ${t.target}`.slice(0, 48)));
      ['24h', '7d'].forEach((w, j) => {
        const c = t[w]; const total = c.delivered + c.failed + c.skipped;
        let x = barX; const yy = y + j * 16;
        chart.append(s('text', { x: barX - 30, y: yy + 11, 'font-size': 10, fill: '#5c6577' }, w));
        for (const [status, color] of [['delivered', '#1d7f3b'], ['failed', '#b3261e'], ['skipped', '#9a6200']]) {
          const wdt = total ? (c[status] / total) * barW : 0;
          if (wdt > 0) chart.append(s('rect', { x, y: yy, width: wdt, height: 12, fill: color }));
          x += wdt;
        }
        chart.append(s('text', { x: barX + barW + 6, y: yy + 11, 'font-size': 10 }, c.success_rate === null ? 'n/a' : `${Math.round(c.success_rate * 100)}%`));
      });
    });
    root.append(chart);
    const rows = targets.map((t) => h('tr', {},
      h('td', {}, t.family), h('td', { class: 'url' }, t.target),
      ['24h', '7d'].map((w) => h('td', {},
        `${t[w].delivered} delivered, ${t[w].failed} failed, ${t[w].skipped} skipped`,
        h('br', {}), t[w].success_rate === null ? 'n/a' : `${(t[w].success_rate * 100).toFixed(1)}% success`))));
    root.append(h('table', { id: 'health' },
      h('thead', {}, h('tr', {}, ['Family', 'Target', 'Last 24 h', 'Last 7 days'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows)));
  }

  // ------------------------------------------------------------------ shell

  const PAGES = { registrations, deliveries, scheduled: () => scheduled(null), health };

  async function render() {
    clearTimers();
    const name = (location.hash || '#registrations').slice(1);
    const view = PAGES[name] || registrations;
    document.getElementById('flash').replaceChildren();
    for (const a of document.querySelectorAll('header nav a')) {
      a.classList.toggle('active', a.dataset.page === name);
    }
    page().setAttribute('aria-busy', 'true');
    try {
      await view();
    } catch (e) {
      flash(`Could not load the page: ${e}`, true);
    }
    page().setAttribute('aria-busy', 'false');
  }

  async function start() {
    const res = await api('GET', '/portal/session');
    if (!res.ok) {
      page().replaceChildren(h('p', { class: 'bad' }, 'Your portal session has ended. Open a new link.'));
      page().setAttribute('aria-busy', 'false');
      return;
    }
    state.session = res.data;
    document.getElementById('who').textContent =
      `tenant ${res.data.tenant_id} · ${res.data.rights === 'manage' ? 'manage' : 'read-only'} · until ${when(res.data.expires_at)}`;
    document.getElementById('logout').addEventListener('click', async () => {
      await api('POST', '/portal/logout');
      state.session = null;
      page().replaceChildren(h('p', {}, 'Signed out.'));
    });
    window.addEventListener('hashchange', render);
    await render();
  }

  start();
})();
