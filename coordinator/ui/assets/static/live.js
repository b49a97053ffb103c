// Live updates for the hive dashboard: long-polls /ui/live/PAGE with the
// status index the page shows; the coordinator answers when the status
// moved past it (or after its wait) with the page's fragment, rendered and
// escaped on the server. No reload, no framework.
"use strict";
(function () {
  var el = document.getElementById("live");
  var state = document.getElementById("live-state");
  var q = document.getElementById("q");
  // Instant search on the fleet page: hide rows that do not match while
  // typing (the form's GET filter does the same on the server).
  function applySearch() {
    if (!q) return;
    var s = q.value.trim().toLowerCase();
    var rows = document.querySelectorAll("#nodes tr.node");
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var hay = (r.getAttribute("data-node") + " " + r.getAttribute("data-roles")).toLowerCase();
      r.hidden = s !== "" && hay.indexOf(s) < 0;
      var next = r.nextElementSibling;
      if (next && next.classList.contains("errors")) next.hidden = r.hidden;
    }
  }
  if (q) q.addEventListener("input", applySearch);
  ["role", "phase"].forEach(function (id) {
    var s = document.getElementById(id);
    if (s) s.addEventListener("change", function () { document.getElementById("filters").submit(); });
  });
  if (!el || !el.getAttribute("data-live")) return;
  var url = el.getAttribute("data-live");
  var index = el.getAttribute("data-index") || "0";
  function say(t) { if (state) state.textContent = t; }
  function sleep(ms) { return new Promise(function (res) { setTimeout(res, ms); }); }
  // At most two polls a second: in a busy fleet reports land all the time,
  // and a page need not redraw more often than that.
  var minGap = 500, last = 0;
  async function loop() {
    for (;;) {
      var gap = last + minGap - Date.now();
      if (gap > 0) await sleep(gap);
      last = Date.now();
      try {
        var sep = url.indexOf("?") < 0 ? "?" : "&";
        var r = await fetch(url + sep + "index=" + encodeURIComponent(index), { credentials: "same-origin", cache: "no-store" });
        if (r.status === 401 || r.status === 403) { say("signed out"); window.location.href = "/ui/login"; return; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        var j = await r.json();
        if (j.index !== index) {
          el.innerHTML = j.html; // rendered and escaped by html/template on the server
          index = j.index;
          el.setAttribute("data-index", index);
          applySearch();
        }
        say("live · updated " + new Date().toLocaleTimeString());
      } catch (e) {
        say("live · reconnecting (" + e.message + ")");
        await sleep(2000);
      }
    }
  }
  loop();
})();
