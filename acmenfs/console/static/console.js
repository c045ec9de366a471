// acmenfs console: small progressive enhancements; every page also works without this file.
// - copy buttons, client-side checks of sizes and access rules (the server checks again),
// - long operations (forms with data-job) run as jobs: submitted with fetch, their progress polled,
// - the dashboard's live section refreshes itself.
"use strict";
(function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const SIZE = /^\s*\d+(\.\d+)?\s*([KMGTP](i?B)?|B)?\s*$/i;
  const UNITS = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };
  const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
  const IPV6 = /^[0-9a-f:.]+$/i;

  function sizeBytes(text) {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)/i.exec(text);
    return m ? Math.floor(parseFloat(m[1]) * UNITS[m[2].toUpperCase()]) : NaN;
  }

  function ruleError(text) {
    const parts = text.trim().split(":");
    if (parts.length >= 3 && ["root", "all", "none"].includes(parts.at(-1)) && ["rw", "ro"].includes(parts.at(-2))) {
      parts.splice(-2);
    } else if (parts.length >= 2 && ["rw", "ro"].includes(parts.at(-1))) {
      parts.splice(-1);
    }
    const client = parts.join(":");
    const [address, prefix, extra] = client.split("/");
    const isV4 = IPV4.test(address), isV6 = address.includes(":") && IPV6.test(address);
    const prefixOk = prefix === undefined || (/^\d+$/.test(prefix) && +prefix <= (isV4 ? 32 : 128));
    if (client === "*" || ((isV4 || isV6) && prefixOk && extra === undefined)) return "";
    return `“${text}” is not CLIENT[:rw|ro[:root|all|none]]: the client must be a host IP, a CIDR or *`;
  }

  function showFieldError(input, message) {
    input.setCustomValidity(message);
    const box = input.form && input.form.querySelector(".field-error");
    if (box) { box.textContent = message; box.hidden = !message; }
    input.setAttribute("aria-invalid", message ? "true" : "false");
  }

  function check(input) {
    const value = input.value.trim();
    let message = "";
    if (input.hasAttribute("data-access") && value) message = ruleError(value);
    if (input.hasAttribute("data-access-list") && value) {
      message = value.split(/[\s,]+/).filter(Boolean).map(ruleError).find(Boolean) || "";
    }
    if (input.hasAttribute("data-size") && value) {
      if (!SIZE.test(value)) message = `“${value}” is not a size: use bytes or a number with K, M, G, T (e.g. 10G)`;
      else if (input.dataset.min && sizeBytes(value) < +input.dataset.min) message = "shares never shrink: give at least the current size";
    }
    showFieldError(input, message);
    return !message;
  }

  function problemText(p) {
    return `${p.title} (${p.status} ${p.code}): ${p.detail}`;
  }

  function panel(html, kind) {
    const box = document.getElementById("job-panel");
    box.className = "job-panel " + (kind || "");
    box.innerHTML = html;
    box.hidden = false;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    return box;
  }

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = text;
    return div.innerHTML;
  }

  function go(url) {
    // A result on this very page (maybe with another #fragment) must still reload it.
    const target = new URL(url, window.location.href);
    const here = window.location;
    if (target.pathname === here.pathname && target.search === here.search) {
      if (target.hash) here.hash = target.hash;
      here.reload();
    } else {
      here.assign(target.href);
    }
  }

  async function pollJob(job, button) {
    const title = escapeHtml(job.title);
    for (;;) {
      const state = await (await fetch(job.status_url, { headers: { Accept: "application/json" } })).json();
      if (state.state === "done") { go(state.result_url); return; }
      if (state.state === "failed") {
        panel(`<strong>${title} failed.</strong> ${escapeHtml(problemText(state.problem))}`, "error");
        if (button) button.disabled = false;
        return;
      }
      const bar = state.percent === null ? "<progress aria-label='progress'></progress>"
        : `<progress max="100" value="${state.percent}" aria-label="progress">${state.percent}%</progress> ${state.percent}%`;
      panel(`<strong>${title}</strong> running for ${state.elapsed} s ${bar}`, "running");
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
  }

  async function submitJob(form, button) {
    const body = new URLSearchParams(new FormData(form));
    const answer = await fetch(form.action, {
      method: "POST", body, credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
    });
    const data = await answer.json().catch(() => ({ title: "Error", status: answer.status, code: "http_error", detail: answer.statusText }));
    if (answer.status !== 202) {
      panel(escapeHtml(problemText(data)), "error");
      if (button) button.disabled = false;
      return;
    }
    panel(`<strong>${escapeHtml(data.title)}</strong> started…`, "running");
    await pollJob(data, button);
  }

  document.addEventListener("input", (event) => {
    if (event.target.matches("[data-access], [data-access-list], [data-size]")) check(event.target);
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    for (const input of form.querySelectorAll("[data-access], [data-access-list], [data-size]")) {
      if (!check(input)) { event.preventDefault(); input.focus(); return; }
    }
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
    if (form.hasAttribute("data-job")) {
      event.preventDefault();
      const button = event.submitter || form.querySelector("button[type=submit]");
      if (button) button.disabled = true;
      submitJob(form, button).catch((error) => {
        panel(escapeHtml(String(error)), "error");
        if (button) button.disabled = false;
      });
    }
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const input = document.getElementById(button.dataset.copy);
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (error) {
      document.execCommand("copy");
    }
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });

  const live = document.querySelector("[data-refresh]");
  if (live) {
    setInterval(async () => {
      const answer = await fetch(live.dataset.refresh, { headers: { Accept: "text/html" } });
      if (answer.ok && !answer.redirected) live.innerHTML = await answer.text();
    }, 5000);
  }
})();
