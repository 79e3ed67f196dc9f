// pen admin UI: small enhancements only. Every page works without this
// script; it adds confirmations, the dashboard's live table and chart.
"use strict";

(function () {
  // Confirmation for destructive buttons (data-confirm="question").
  document.addEventListener("submit", function (ev) {
    var b = ev.submitter;
    if (b && b.dataset && b.dataset.confirm && !window.confirm(b.dataset.confirm)) {
      ev.preventDefault();
    }
  });

  if (document.body.dataset.page !== "dashboard") {
    return;
  }

  var SVGNS = "http://www.w3.org/2000/svg";
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  var slots = live ? Number(live.dataset.slots) : 0;

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (r.status === 401 || r.redirected) {
        window.location.href = "/login?next=/";
        throw new Error("logged out");
      }
      if (!r.ok) {
        throw new Error(url + ": HTTP " + r.status);
      }
      return r.json();
    });
  }

  // The table: /api/state gives the text of every changing cell.
  function refreshState() {
    return getJSON("/api/state").then(function (st) {
      if (st.slots !== slots) {
        window.location.reload(); // servers added or removed elsewhere
        return;
      }
      document.querySelectorAll("[data-cell]").forEach(function (el) {
        var v = st.cells[el.dataset.cell];
        if (v !== undefined && el.textContent !== v) {
          el.textContent = v;
        }
      });
      document.querySelectorAll("[data-pill]").forEach(function (el) {
        var key = el.dataset.pill;
        var state = key === "serving" ? (st.serving ? "up" : "down") : st.states[key];
        if (state) {
          el.className = "pill " + state;
        }
      });
      var upd = document.getElementById("updated");
      if (upd) {
        upd.textContent = "Live: updated " + new Date(st.time * 1000).toLocaleTimeString() + ".";
      }
    });
  }

  function human(n) {
    var units = ["", "k", "M", "G", "T"];
    var i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i++;
    }
    var whole = Math.abs(n - Math.round(n)) < 1e-9;
    return (whole ? String(Math.round(n)) : n.toFixed(n < 10 ? 1 : 0)) + units[i];
  }

  function el(name, attrs, text) {
    var e = document.createElementNS(SVGNS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) {
      e.textContent = text;
    }
    return e;
  }

  // niceMax rounds a maximum up to 1, 2 or 5 times a power of ten, and
  // to at least floor.
  function niceMax(v, floor) {
    if (v <= floor) {
      return floor;
    }
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  // span is the time the charts show: the history there is, in whole
  // minutes, from one minute up to the ten the server keeps.
  function span(data) {
    var n = data.times.length;
    if (n < 2) {
      return 60;
    }
    var have = data.times[n - 1] - data.times[0];
    return Math.min(600, Math.max(60, Math.ceil(have / 60) * 60));
  }

  function ago(sec) {
    if (sec === 0) {
      return "now";
    }
    if (sec < 60) {
      return "-" + sec + " s";
    }
    var m = sec / 60;
    return "-" + (m === Math.round(m) ? m : m.toFixed(1)) + " min";
  }

  // draw plots one line per server into svg: values(server) gives the
  // numbers, aligned with the end of data.times.
  function draw(svg, data, values, fmt, floor) {
    var w = svg.clientWidth || 600;
    var h = svg.clientHeight || 220;
    var left = 64, right = 14, top = 12, bottom = 24;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    while (svg.firstChild) {
      svg.removeChild(svg.firstChild);
    }
    var n = data.times.length;
    var shown = span(data);
    var end = n ? data.times[n - 1] : 0;
    var max = 0;
    data.servers.forEach(function (s) {
      values(s).forEach(function (v) { if (v > max) { max = v; } });
    });
    max = niceMax(max, floor);
    var lead = max / Math.pow(10, Math.floor(Math.log10(max)) + 1e-9);
    var steps = Math.round(lead) === 2 ? 4 : 5;
    var x = function (t) { return left + (w - left - right) * (1 - (end - t) / shown); };
    var y = function (v) { return top + (h - top - bottom) * (1 - v / max); };
    for (var i = 0; i <= steps; i++) {
      var v = max * i / steps;
      svg.appendChild(el("line", { "class": "grid-line", x1: left, x2: w - right, y1: y(v), y2: y(v) }));
      svg.appendChild(el("text", { "class": "axis-label", x: left - 8, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    [1, 0.75, 0.5, 0.25, 0].forEach(function (f) {
      var a = Math.round(shown * f);
      svg.appendChild(el("text", { "class": "axis-label", x: x(end - a), y: h - 6, "text-anchor": f === 1 ? "start" : f === 0 ? "end" : "middle" }, ago(a)));
    });
    if (n === 0 || data.servers.length === 0) {
      svg.appendChild(el("text", { "class": "empty-label", x: w / 2, y: h / 2, "text-anchor": "middle" },
        data.servers.length === 0 && n > 0 ? "no servers" : "collecting samples…"));
      return;
    }
    data.servers.forEach(function (s) {
      var vals = values(s);
      var off = n - vals.length;
      var pts = [];
      for (var j = 0; j < vals.length; j++) {
        if (end - data.times[off + j] <= shown) {
          pts.push(x(data.times[off + j]).toFixed(1) + "," + y(vals[j]).toFixed(1));
        }
      }
      if (pts.length === 1) {
        pts.push(pts[0]);
      }
      var line = el("polyline", { "class": "series-" + (s.slot % 10), points: pts.join(" ") });
      line.appendChild(el("title", {}, "server " + s.slot + " " + s.address));
      svg.appendChild(line);
    });
  }

  function legend(data) {
    var box = document.getElementById("legend");
    if (!box) {
      return;
    }
    var key = data.servers.map(function (s) { return s.slot + " " + s.address; }).join("|");
    if (box.dataset.key === key) {
      return;
    }
    box.dataset.key = key;
    box.textContent = "";
    data.servers.forEach(function (s) {
      var item = document.createElement("span");
      var sw = document.createElement("span");
      sw.className = "swatch series-" + (s.slot % 10);
      item.appendChild(sw);
      item.appendChild(document.createTextNode("server " + s.slot + " · " + s.address));
      box.appendChild(item);
    });
  }

  function refreshChart() {
    return getJSON("/api/samples").then(function (data) {
      draw(document.getElementById("chart-conns"), data, function (s) { return s.conns; }, function (v) { return human(v); }, 5);
      draw(document.getElementById("chart-bytes"), data, function (s) {
        return s.sent.map(function (v, i) { return v + s.recv[i]; });
      }, function (v) { return human(v) + " B/s"; }, 1000);
      legend(data);
      if (status) {
        status.textContent = "last " + ago(span(data)).slice(1) + " · one sample every " + data.interval + " s · " + data.times.length + " samples";
      }
    });
  }

  var failures = 0;
  function tick() {
    Promise.all([refreshState(), refreshChart()]).then(function () {
      failures = 0;
    }, function (err) {
      failures++;
      if (status) {
        status.textContent = "live update failed (" + err.message + "), retrying";
      }
    }).then(function () {
      window.setTimeout(tick, failures > 3 ? 10000 : 2000);
    });
  }
  tick();
  window.addEventListener("resize", function () { refreshChart().catch(function () {}); });
})();
