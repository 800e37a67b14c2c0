// The panel's pages send every change to the JSON API (/api/v1) with the session's CSRF token.
// Forms and buttons say where with data-api and data-method; nothing from the server is ever
// inserted as HTML (textContent only), so text from mail cannot run here.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const FLASH_KEY = "mailyard-flash";

  // A message at the top of the page; `lines` (one per node of a cascaded action) as a list.
  function flash(text, kind, lines) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    if (lines && lines.length) {
      const list = document.createElement("ul");
      list.className = "outcomes";
      lines.forEach(function (line) {
        const item = document.createElement("li");
        item.textContent = line;
        list.appendChild(item);
      });
      box.appendChild(list);
    }
    box.className = "flash " + (kind || "ok");
    box.hidden = false;
  }

  function reloadWith(text, target, kind, lines) {
    sessionStorage.setItem(FLASH_KEY, JSON.stringify({text: text, kind: kind || "ok",
                                                      lines: lines || []}));
    if (target) window.location.assign(target);
    else window.location.reload();
  }

  const pending = sessionStorage.getItem(FLASH_KEY);
  if (pending) {
    sessionStorage.removeItem(FLASH_KEY);
    let shown = {text: pending, kind: "ok", lines: []};
    try { shown = JSON.parse(pending); } catch (e) { /* a plain message */ }
    flash(shown.text, shown.kind, shown.lines);
  }

  // "Cascade to nodes?" beside an action: ticked, the action goes to every node of the
  // cluster through the manager (/api/v1/cluster/actions) and each node's outcome is shown.
  function cascading(el) {
    const scope = el.closest("[data-cascade-scope]");
    const box = scope ? scope.querySelector("input.cascade-actions") : null;
    return !!(el.dataset.cascade && box && box.checked);
  }

  async function cascade(el, queues) {
    const body = {action: el.dataset.cascade};
    if (el.dataset.cascadeService) body.service = el.dataset.cascadeService;
    if (queues) body.queues = queues;
    const result = await call("POST", "/api/v1/cluster/actions", body);
    if (!result.ok) return result;
    const report = result.data;
    const lines = report.outcomes.map(function (o) {
      return o.node + ": " + o.state + " \u2014 " + o.detail;
    });
    const text = report.ok ? "Cascaded " + report.action + ": done on every node."
                           : "Cascaded " + report.action + ": not done on every node.";
    reloadWith(text, undefined, report.ok ? "ok" : "bad", lines);
    return result;
  }

  function confirmText(el, text) {
    return cascading(el) ? text + " This is done on every node of the cluster." : text;
  }

  async function call(method, url, body) {
    const options = {method: method, credentials: "same-origin",
                     headers: {"X-CSRF-Token": csrf, "Accept": "application/json"}};
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    return {ok: response.ok, status: response.status, data: data};
  }

  function describe(result) {
    if (result.data && result.data.message) return result.data.message;
    if (result.data && result.data.detail) return String(result.data.detail);
    if (result.status === 401) return "Your session has ended; sign in again.";
    return "The request failed (HTTP " + result.status + ").";
  }

  function clearErrors(form) {
    form.querySelectorAll(".error[data-error-for]").forEach(function (el) {
      el.hidden = true; el.textContent = "";
    });
    form.querySelectorAll(".invalid").forEach(function (el) { el.classList.remove("invalid"); });
  }

  function showRefusal(form, data) {
    const where = form.querySelector('.error[data-error-for="' + CSS.escape(data.field) + '"]');
    const input = form.querySelector('[name="' + CSS.escape(data.field) + '"]');
    const label = input && input.id ? form.querySelector('label[for="' + input.id + '"]') : null;
    const name = label ? label.textContent.replace(/^\*\s*/, "").replace(/:$/, "") : data.field;
    let shown = data.value;
    if (Array.isArray(shown)) shown = shown.join(", ");
    const text = name + " (" + data.field + "): \u201c" + shown + "\u201d is not allowed; " + data.reason;
    if (where) { where.textContent = text; where.hidden = false; }
    if (input) { input.classList.add("invalid"); input.focus(); }
    return text;
  }

  function labelOf(form, key) {
    const label = form.querySelector('[data-field="' + CSS.escape(key) + '"] label');
    return label ? label.textContent.replace(/^\*\s*/, "").replace(/:$/, "") : key;
  }

  // What a settings box's change did beyond "Saved.": with "Cascade to nodes?" ticked, which
  // settings went to every node and which stayed on this one; which services were restarted.
  function settingsOutcome(form, body, data) {
    let text = "";
    const names = function (keys) {
      return keys.map(function (k) { return labelOf(form, k); }).join(", ");
    };
    if (body.cascade && data.cascaded && data.cascaded.length) {
      text += " Cascaded to every node: " + names(data.cascaded) + ".";
    }
    if (body.cascade && data.node_only && data.node_only.length) {
      text += " Kept on this node only (each node has its own): " + names(data.node_only) + ".";
    }
    if (data.restarted && data.restarted.length) {
      text += " Restarted to take effect: " + data.restarted.join(", ") + ".";
    }
    return text;
  }

  function formBody(form) {
    if (form.dataset.kind === "settings") {
      const values = {};
      form.querySelectorAll("[data-setting]").forEach(function (el) {
        values[el.dataset.setting] = el.value;
      });
      const cascade = form.querySelector('input[name="cascade"]');
      return {values: values, cascade: !!(cascade && cascade.checked)};
    }
    const body = {};
    Array.from(form.elements).forEach(function (el) {
      if (!el.name || el.name === "csrf_token" || el.tagName === "BUTTON") return;
      if (el.dataset.list !== undefined) {
        if (!(el.name in body)) body[el.name] = [];
        if (el.type === "checkbox") { if (el.checked) body[el.name].push(el.value); }
        else body[el.name] = el.value.split(/[\s,]+/).filter(Boolean);
      } else if (el.type === "checkbox") {
        body[el.name] = el.checked;
      } else if (el.value !== "" || !el.dataset.optional) {
        body[el.name] = el.value;
      }
    });
    return body;
  }

  async function submit(form, event) {
    event.preventDefault();
    clearErrors(form);
    const status = form.dataset.status ? document.querySelector(form.dataset.status)
                                       : form.querySelector(".form-status");
    if (status) { status.textContent = ""; status.className = "form-status"; }
    const body = formBody(form);
    if (form.dataset.needs) {
      const list = body[form.dataset.needs];
      if (!list || list.length === 0) {
        const text = form.dataset.needsText || "Select something first.";
        if (status) { status.textContent = text; status.className = "form-status bad"; }
        return;
      }
    }
    if (form.dataset.confirm && !window.confirm(confirmText(form, form.dataset.confirm))) return;
    if (cascading(form)) {
      const button = form.querySelector('button[type="submit"]') ||
                     document.querySelector('button[form="' + form.id + '"]');
      if (button) button.disabled = true;
      const result = await cascade(form, body.queues);
      if (button) button.disabled = false;
      if (!result.ok && status) { status.textContent = describe(result); status.className = "form-status bad"; }
      else if (!result.ok) flash(describe(result), "bad");
      return;
    }
    let url = form.dataset.api;
    url = url.replace(/\{(\w+)\}/g, function (_m, name) {
      return encodeURIComponent(body[name] !== undefined ? body[name] : "");
    });
    const button = form.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    const result = await call(form.dataset.method || "POST", url,
                              form.dataset.method === "DELETE" ? undefined : body);
    if (button) button.disabled = false;
    if (result.ok) {
      let text = form.dataset.done || "Saved.";
      if (form.dataset.kind === "settings" && result.data) text += settingsOutcome(form, body, result.data);
      if (result.data && result.data.problems && result.data.problems.length) {
        text += " Not applied everywhere: " + result.data.problems.join("; ");
      }
      if (form.dataset.stay !== undefined) {
        if (status) { status.textContent = text; status.className = "form-status ok"; }
        if (result.data && result.data.queue_id && status) {
          status.textContent = text + " Queue id: " + result.data.queue_id + ".";
        }
        form.dispatchEvent(new CustomEvent("mailyard:done", {detail: result.data}));
        return;
      }
      reloadWith(text);
      return;
    }
    let text;
    if (result.status === 422 && result.data && result.data.field !== undefined) {
      text = showRefusal(form, result.data);
    } else {
      text = describe(result);
    }
    if (status) { status.textContent = text; status.className = "form-status bad"; }
    else flash(text, "bad");
  }

  document.querySelectorAll("form[data-api]").forEach(function (form) {
    form.addEventListener("submit", function (event) { submit(form, event); });
  });

  document.querySelectorAll("button[data-api]").forEach(function (button) {
    button.addEventListener("click", async function () {
      if (button.dataset.confirm &&
          !window.confirm(confirmText(button, button.dataset.confirm))) return;
      button.disabled = true;
      if (cascading(button)) {
        const cascaded = await cascade(button);  // reloads the page with the outcomes
        button.disabled = false;
        if (!cascaded.ok) flash(describe(cascaded), "bad");
        return;
      }
      const result = await call(button.dataset.method || "POST", button.dataset.api);
      button.disabled = false;
      if (result.ok) reloadWith(button.dataset.done || "Done.", button.dataset.goto);
      else flash(describe(result), "bad");
    });
  });

  // Edit buttons fill the edit form named by data-fill with the row's values.
  document.querySelectorAll("button[data-fill]").forEach(function (button) {
    button.addEventListener("click", function () {
      const form = document.getElementById(button.dataset.fill);
      if (!form) return;
      Object.keys(button.dataset).forEach(function (key) {
        if (!key.startsWith("v")) return;
        const name = key.slice(1).replace(/^[A-Z]/, function (c) { return c.toLowerCase(); });
        const el = form.querySelector('[name="' + CSS.escape(name) + '"]');
        if (!el) return;
        if (el.type === "checkbox") el.checked = button.dataset[key] === "true";
        else el.value = button.dataset[key];
      });
      form.hidden = false;
      const first = form.querySelector("input:not([type=hidden]), select, textarea");
      if (first) first.focus();
    });
  });

  // "Select all" boxes tick every checkbox of their table.
  document.querySelectorAll("input[data-select-all]").forEach(function (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[form="' + all.dataset.selectAll + '"][data-list]')
        .forEach(function (box) { box.checked = all.checked; });
    });
  });
})();
