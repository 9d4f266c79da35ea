// fedchain console: live updates. Listens to /events (server-sent events) and,
// when the chain has new events, the audit changed, or a deadline the page
// names has passed, re-fetches this page and swaps in its live parts
// (elements with data-live and an id). Written for fedchain; no library.
(function () {
  "use strict";
  var body = document.body;
  var state = document.getElementById("live-state");
  var last = {
    events: Number(body.dataset.events),
    audit: Number(body.dataset.audit),
    // the block this page was rendered at: a deadline passed between the render and the
    // first pulse must still refresh the page
    block: body.dataset.head ? Number(body.dataset.head) : null
  };
  var busy = false, again = false;

  function untilBlocks() {
    var out = [];
    document.querySelectorAll("[data-until-block]").forEach(function (el) {
      out.push(Number(el.dataset.untilBlock));
    });
    return out;
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        // a failed fetch leaves `last` as the page shows it, so the next pulse tries again
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh) { el.replaceWith(document.importNode(fresh, true)); }
        });
        var main = doc.querySelector("main");
        var here = document.querySelector("main");
        if (main && here) {
          if (main.dataset.untilBlock) { here.dataset.untilBlock = main.dataset.untilBlock; }
          else { delete here.dataset.untilBlock; }
        }
        var b = doc.body;
        last.events = Number(b.dataset.events);
        last.audit = Number(b.dataset.audit);
        body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
      })
      .catch(function () { /* the next pulse tries again */ })
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  if (!window.EventSource) { if (state) { state.textContent = "unavailable in this browser"; } return; }
  var source = new EventSource("/events");
  source.addEventListener("open", function () { if (state) { state.textContent = "on"; } });
  source.addEventListener("error", function () { if (state) { state.textContent = "reconnecting…"; } });
  source.addEventListener("pulse", function (ev) {
    var p;
    try { p = JSON.parse(ev.data); } catch (e) { return; }
    if (p.error) { if (state) { state.textContent = "chain unreachable"; } return; }
    if (state) { state.textContent = "on"; }
    document.querySelectorAll("[data-block]").forEach(function (el) { el.textContent = p.block; });
    var changed = p.events !== last.events || p.audit !== last.audit;
    var passed = last.block !== null && untilBlocks().some(function (u) { return last.block < u && p.block >= u; });
    last.block = p.block;
    // `last` follows what the page shows (set by a successful refresh), not the pulse: an update
    // whose refresh failed or rendered an older state is fetched again at the next pulse
    if (changed || passed) { refresh(); }
  });
})();
