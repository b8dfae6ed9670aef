// ringwork dashboard: live updates over server-sent events, no framework, no build step.
// Each event says the cluster changed; the page then fetches itself again and swaps the
// <main id="live"> part in, so every screen shows fresh data without a reload.
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";
  var dot = document.getElementById("live-state");
  var busy = false, again = false;

  function refresh() {
    if (busy) { again = true; return; }
    // Never replace a page while someone types in a filter or holds a button.
    var active = document.activeElement;
    if (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) return;
    busy = true;
    fetch(window.location.href, { headers: { "X-Ringwork-Live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live"), old = document.getElementById("live");
        if (!fresh || !old) return;
        // Keep the <details> a reader opened.
        var open = Array.prototype.map.call(old.querySelectorAll("details[open]"),
          function (d) { return d.querySelector("summary").textContent; });
        old.innerHTML = fresh.innerHTML;
        Array.prototype.forEach.call(old.querySelectorAll("details"), function (d) {
          if (open.indexOf(d.querySelector("summary").textContent) >= 0) d.open = true;
        });
        document.dispatchEvent(new CustomEvent("ringwork:refreshed"));
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  if (!window.EventSource) return;
  var source = new EventSource(base + "/events");
  source.onopen = function () { if (dot) dot.className = "on"; };
  source.onerror = function () { if (dot) dot.className = "off"; };
  source.onmessage = function () {
    if (dot) dot.className = "on";
    // The first event too: the cluster may have changed between the page's render and the
    // stream's first read.
    refresh();
  };
})();
