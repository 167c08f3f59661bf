/* kgzsl explorer: search, class pages (index.html#ID), the map. Data come as scripts (file:// forbids fetch):
   data/nodes.js (KG_NODES), data/meta.js (KG_META), data/photos.js (KG_PHOTOS), data/detail-NNN.js (KG_DETAIL),
   data/map.js (KG_MAP) and plotly.min.js, the last three loaded on demand. */
(function () {
  "use strict";
  var N = window.KG_NODES, M = window.KG_META, P = window.KG_PHOTOS || null;
  var ROLE = ["seen", "unseen", "internal"], ROLE_LABEL = ["seen", "unseen", "structure"];
  var COLOURS = ["#1f77b4", "#e8710a", "#b5b5b5"];
  var count = N.ids.length, index = {}, shards = {}, waiting = {}, children = null, state = {node: null, mapReady: false};
  window.KG_STATE = state;
  for (var i = 0; i < count; i++) index[N.ids[i]] = i;

  function $(id) { return document.getElementById(id); }
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; }); }
  function name(i) { return N.names[i][0]; }
  function link(i, extra) {
    return '<a href="#' + encodeURIComponent(N.ids[i]) + '" data-id="' + esc(N.ids[i]) + '" class="' + (N.trained[i] ? "trained" : "") +
      '" title="' + esc(N.ids[i] + " (" + ROLE_LABEL[N.role[i]] + ")") + '">' + esc(name(i)) + "</a>" + (extra || "");
  }
  function fmt(x, d) { return x === null || x === undefined ? "–" : Number(x).toFixed(d === undefined ? 3 : d); }
  function pad(k) { return ("00" + k).slice(-3); }
  function script(src, onload) {
    var s = document.createElement("script");
    s.src = src; s.onload = onload || null;
    document.body.appendChild(s);
  }

  /* ---------------------------------------------------------------- detail shards */
  window.KG_DETAIL = function (k, records) {
    shards[k] = records;
    (waiting[k] || []).forEach(function (f) { f(records); });
    delete waiting[k];
  };
  function detail(i, then) {
    var k = Math.floor(i / M.shard_size);
    if (shards[k]) { then(shards[k][i % M.shard_size]); return; }
    var first = !waiting[k];
    (waiting[k] = waiting[k] || []).push(function (recs) { then(recs[i % M.shard_size]); });
    if (first) script("data/detail-" + pad(k) + ".js");
  }
  function childrenOf(i) {
    if (!children) {
      children = [];
      for (var c = 0; c < count; c++) children.push([]);
      for (var c2 = 0; c2 < count; c2++) N.parents[c2].forEach(function (p) { children[p].push(c2); });
    }
    return children[i];
  }
  function pathToRoot(i) {
    var path = [i], seen = {};
    seen[i] = true;
    while (N.parents[path[0]].length && !seen[N.parents[path[0]][0]]) {
      path.unshift(N.parents[path[0]][0]);
      seen[path[0]] = true;
    }
    return path;
  }

  /* ---------------------------------------------------------------- class page */
  function listTable(id, rows, head, value) {
    if (!rows || !rows.length) return '<p class="note">none</p>';
    return '<table id="' + id + '"><tr><th>#</th><th>class</th><th class="num">' + head + "</th></tr>" + rows.map(function (r, k) {
      return '<tr data-id="' + esc(N.ids[r[0]]) + '"><td>' + (k + 1) + "</td><td>" + link(r[0]) + ' <span class="mono">' +
        esc(N.ids[r[0]]) + '</span></td><td class="num">' + value(r[1]) + "</td></tr>";
    }).join("") + "</table>";
  }
  function groupWeights() {
    var g = M.group_weights;
    if (!g) return "";
    var phases = Object.keys(g).filter(function (k) { return /_phase$/.test(k); });
    return '<h2>' + esc((M.model || "").toUpperCase()) + ' hop-group weights <span class="note">(learned, the same for every class)</span></h2>' +
      '<table id="group-weights"><tr><th>distance</th>' + phases.map(function (p) { return '<th class="num">' + esc(p.replace("_phase", "")) + " phase</th>"; }).join("") +
      "</tr>" + g.distances.map(function (d, k) {
        return "<tr><td>" + esc(d) + "</td>" + phases.map(function (p) { return '<td class="num">' + fmt(g[p][k], 4) + "</td>"; }).join("") + "</tr>";
      }).join("") + "</table>";
  }
  function photoCards(entries) {
    if (!P || !entries || !entries.length) return "";
    return "<h2>Photos scoring it highest <span class=\"note\">(" + esc(P.candidates) + " candidates; each photo's top-5)</span></h2>" +
      '<div class="photos" id="photos">' + entries.map(function (e) {
        var p = P.photos[e[0]];
        return '<div class="photo">' + (p.thumb ? '<img loading="lazy" src="' + esc(p.thumb) + '" alt="' + esc(p.path) + '">' : "") +
          '<div title="' + esc(p.path) + '">' + (index[p.label] !== undefined ? link(index[p.label]) : esc(p.label)) +
          ' <span class="mono">· score ' + fmt(e[1]) + "</span></div><ol>" +
          p.top.map(function (t) { return '<li class="' + (N.ids[t[0]] === p.label ? "hit" : "") + '">' + link(t[0]) + " " + fmt(t[1]) + "</li>"; }).join("") +
          "</ol></div>";
      }).join("") + "</div>";
  }
  function renderDetail(i, d) {
    if (state.node !== i) return;
    var html = '<p>weight norm ' + fmt(d.n, 4) + (d.t !== undefined ? " · cosine to its true classifier " + fmt(d.t, 4) : "") + "</p>";
    html += '<div class="cols"><div><h2>Nearest classes by classifier <span class="note">(cosine)</span></h2>' +
      listTable("nearest-weight", d.w, "cosine", function (v) { return fmt(v, 4); }) + "</div>";
    html += '<div><h2>Nearest classes by node feature <span class="note">(cosine)</span></h2>' +
      listTable("nearest-feature", d.f, "cosine", function (v) { return fmt(v, 4); }) + "</div></div>";
    if (d.a) {
      html += "<h2>Built from <span class=\"note\">(representer weights of seen classes" +
        (d.af !== null && d.af !== undefined ? "; expansion cosine " + fmt(d.af) : "") + ")</span></h2>" +
        listTable("attribution", d.a, "weight", function (v) { return (v >= 0 ? "+" : "") + fmt(v, 4); });
    }
    html += groupWeights() + photoCards(d.p) + '<p class="note">* trained on its real classifier</p>';
    $("detail").innerHTML = html;
    state.rendered = i;
    if (window.performance && performance.mark) performance.mark("kg-class-page");
    highlight(i, d);
  }
  function renderClass(i) {
    state.node = i;
    var role = N.role[i], path = pathToRoot(i), kids = childrenOf(i);
    var others = N.parents[i].slice(1);
    var html = "<h1 id=\"class-name\">" + esc(name(i)) + "</h1>" +
      '<div class="altnames">' + esc(N.names[i].slice(1).join(", ")) + "</div>" +
      '<div><span class="badge ' + ROLE[role] + '" id="role">' + ROLE_LABEL[role] + "</span>" +
      '<span class="badge ' + (N.trained[i] ? "real" : "propagated") + '" id="classifier-kind">' +
      (N.trained[i] ? "real classifier (trained on it)" : "propagated classifier") + '</span><span class="mono" id="class-id">' + esc(N.ids[i]) + "</span></div>" +
      '<p class="gloss">' + esc(N.gloss[i] || "") + "</p>" +
      '<h2>Path to the root</h2><div class="path" id="path">' + path.map(function (p) { return p === i ? "<b>" + esc(name(p)) + "</b>" : link(p); }).join(' <span class="sep">›</span> ') +
      (others.length ? '<div class="note">also under: ' + others.map(function (p) { return link(p); }).join(", ") + "</div>" : "") + "</div>" +
      "<h2>Children (" + kids.length + ')</h2><div class="children" id="children">' + (kids.length ? kids.slice(0, 300).map(function (c) { return link(c); }).join(", ") +
        (kids.length > 300 ? " …" : "") : '<span class="note">none</span>') + "</div>" +
      '<div id="detail"><p class="note">loading…</p></div>';
    $("page").innerHTML = html;
    document.title = name(i) + " – kgzsl explorer";
    detail(i, function (d) { renderDetail(i, d); });
  }

  /* ---------------------------------------------------------------- home: the run and its calibration */
  function renderHome() {
    state.node = null;
    var c = M.counts, html = "<h1>" + esc(M.model ? M.model.toUpperCase() + " run" : "Run") + "</h1><p class=\"mono\">" + esc(M.run) + "</p>" +
      "<p>" + M.nodes + " nodes: " + c.seen + " seen, " + c.unseen + " unseen, " + c.internal + " structure-only; " + M.trained +
      " classes trained on their real classifier. Backbone: " + esc(M.backbone || "?") + ". Search a class above or click the map.</p>";
    var cal = M.calibration;
    if (cal) {
      var r = cal.record;
      html += "<h2>Calibration (hedged answers over unseen candidates)</h2><p>temperature " + fmt(r.temperature, 4) +
        (r.ece_before !== undefined ? ", ECE " + fmt(r.ece_before) + " → " + fmt(r.ece_after) : "") + ", calibrated on " + esc(r.images) +
        " images of " + esc(r.classes) + " classes (" + esc(r.features || "?") + ")</p>";
      if (cal.curves_skipped) html += '<p class="note">' + esc(cal.curves_skipped) + "</p>";
      if (cal.reliability) {
        var a = cal.accuracy_specificity;
        html += '<p class="note" id="curves-from">' + (cal.curves_from === "features" ? "Curves on the " + esc(a.images) +
          " photos of " + esc(a.features) : "Curves on the " + esc(a.images) + " calibration images, as kgzsl calibrate recorded them") + ".</p>" +
          '<div class="cols"><div id="reliability" class="chart"></div><div id="accspec" class="chart"></div></div>';
      } else if (!cal.curves_skipped) html += '<p class="note">This calibration records no curves (written before kgzsl stored them' + (r.shipped ? ", as shipped" : "") +
        "): run kgzsl calibrate again, " +
        "or pass --features with labelled photos of calibrated classes, to draw the reliability and accuracy-specificity curves.</p>";
    }
    html += groupWeights();
    $("page").innerHTML = html;
    document.title = "kgzsl explorer";
    drawCalibration();
  }
  function drawCalibration() {
    var cal = M.calibration;
    if (!cal || !cal.reliability || !window.Plotly || !$("reliability")) return;
    var rel = [{x: [0, 1], y: [0, 1], mode: "lines", line: {dash: "dash", color: "#999"}, name: "perfectly calibrated"}];
    Object.keys(cal.reliability).forEach(function (k) {
      var c = cal.reliability[k];
      rel.push({x: c.confidence, y: c.accuracy, mode: "lines+markers", name: "flat top-1, " + k + " (ECE " + fmt(c.ece) + ")"});
    });
    Plotly.newPlot("reliability", rel, {title: {text: "Reliability", font: {size: 13}}, margin: {l: 45, r: 10, t: 30, b: 40},
      xaxis: {title: {text: "confidence"}, range: [0, 1]}, yaxis: {title: {text: "accuracy"}, range: [0, 1]},
      legend: {font: {size: 10}, orientation: "h", y: -0.3}, height: 340},
      {displayModeBar: false, responsive: true});
    var a = cal.accuracy_specificity, lines = [];
    Object.keys(a.rules).forEach(function (rule, k) {
      var s = a.rules[rule];
      lines.push({x: s.gain, y: s.accuracy.map(function (v) { return 100 * v; }), mode: "lines", name: rule, line: {dash: s.default ? "solid" : "dot"}});
      lines.push({x: s.targets.map(function (t) { return t[1]; }), y: s.targets.map(function (t) { return 100 * t[2]; }), mode: "markers+text",
        text: s.targets.map(function (t) { return String(t[0]); }), textposition: "top right", name: rule + " targets", showlegend: false});
    });
    lines.push({x: [a.flat[0]], y: [100 * a.flat[1]], mode: "markers", marker: {symbol: "x", size: 10}, name: "flat top-1"});
    Plotly.newPlot("accspec", lines, {title: {text: "Accuracy–specificity (" + a.images + (cal.curves_from === "features" ? " photos)" : " images)"), font: {size: 13}}, margin: {l: 45, r: 10, t: 30, b: 40},
      xaxis: {title: {text: "mean information gain (bits)"}}, yaxis: {title: {text: "hierarchical accuracy (%)"}, range: [0, 102]},
      legend: {font: {size: 10}, orientation: "h", y: -0.3}, height: 340},
      {displayModeBar: false, responsive: true});
  }

  function route() {
    var id = decodeURIComponent(location.hash.replace(/^#/, ""));
    if (id && index[id] !== undefined) renderClass(index[id]);
    else { renderHome(); highlight(null, null); }
    window.scrollTo(0, 0);
  }

  /* ---------------------------------------------------------------- search */
  var entries = [];
  N.names.forEach(function (names, i) {
    entries.push([N.ids[i].toLowerCase(), i]);
    names.forEach(function (n) { entries.push([n.toLowerCase().replace(/_/g, " "), i]); });
  });
  var active = -1, shown = [];
  function suggest(query) {
    var q = query.trim().toLowerCase().replace(/_/g, " "), t0 = performance.now();
    var exact = [], prefix = [], inside = [], taken = {};
    if (q) {
      for (var k = 0; k < entries.length; k++) {
        var e = entries[k], at = e[0].indexOf(q);
        if (at < 0 || taken[e[1]]) continue;
        taken[e[1]] = true;
        if (e[0] === q) exact.push(e[1]); else if (at === 0) prefix.push(e[1]); else if (inside.length < 50) inside.push(e[1]);
      }
    }
    var byRole = function (a, b) { return (N.role[a] === 2) - (N.role[b] === 2) || name(a).length - name(b).length; };
    shown = exact.sort(byRole).concat(prefix.sort(byRole), inside.sort(byRole)).slice(0, 12);
    var list = $("suggestions");
    list.innerHTML = shown.map(function (i, k) {
      return '<li data-id="' + esc(N.ids[i]) + '"><span>' + esc(name(i)) + '</span><span class="sid">' + esc(N.ids[i]) + " · " + ROLE_LABEL[N.role[i]] + "</span></li>";
    }).join("");
    list.hidden = !shown.length;
    active = shown.length ? 0 : -1;
    mark();
    state.searchMs = performance.now() - t0;
    state.suggestions = shown.length;
  }
  function mark() {
    Array.prototype.forEach.call($("suggestions").children, function (li, k) { li.className = k === active ? "active" : ""; });
  }
  function go(i) { $("suggestions").hidden = true; $("search").value = ""; location.hash = "#" + encodeURIComponent(N.ids[i]); }
  $("search").addEventListener("input", function () { suggest(this.value); });
  $("search").addEventListener("keydown", function (ev) {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      if (shown.length) active = (active + (ev.key === "ArrowDown" ? 1 : shown.length - 1)) % shown.length;
      mark(); ev.preventDefault();
    } else if (ev.key === "Enter" && active >= 0) go(shown[active]);
    else if (ev.key === "Escape") $("suggestions").hidden = true;
  });
  $("suggestions").addEventListener("mousedown", function (ev) {
    var li = ev.target.closest("li");
    if (li) { ev.preventDefault(); go(index[li.getAttribute("data-id")]); }
  });
  document.addEventListener("click", function (ev) { if (!ev.target.closest("#searchbox")) $("suggestions").hidden = true; });

  /* ---------------------------------------------------------------- map */
  function webgl() {
    try { var c = document.createElement("canvas"); return !!(c.getContext("webgl") || c.getContext("experimental-webgl")); } catch (e) { return false; }
  }
  function drawMap() {
    var X = window.KG_MAP, type = webgl() ? "scattergl" : "scatter", traces = [];
    state.mapType = type;
    [1, 0, 2].forEach(function (r) {
      var xs = [], ys = [], text = [], ids = [];
      for (var i = 0; i < count; i++) if (N.role[i] === r) { xs.push(X.x[i]); ys.push(X.y[i]); text.push(name(i)); ids.push(i); }
      traces.push({type: type, mode: "markers", x: xs, y: ys, text: text, customdata: ids, name: ROLE_LABEL[r], hoverinfo: "text",
        marker: {size: r === 2 ? 3 : 4, color: COLOURS[r], opacity: r === 2 ? 0.5 : 0.7}});
    });
    traces.push({type: type, mode: "markers", x: [], y: [], text: [], customdata: [], name: "this class and its neighbours", hoverinfo: "text",
      marker: {size: [], color: [], line: {width: 1.5, color: "#000"}}});
    Plotly.newPlot("map", traces, {margin: {l: 8, r: 8, t: 8, b: 8}, hovermode: "closest", dragmode: "pan", showlegend: false,
      xaxis: {visible: false}, yaxis: {visible: false, scaleanchor: "x"}, uirevision: "map"},
      {responsive: true, scrollZoom: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]}).then(function (gd) {
      gd.on("plotly_click", function (ev) {
        var p = ev.points && ev.points[0];
        if (p && p.customdata !== undefined) location.hash = "#" + encodeURIComponent(N.ids[p.customdata]);
      });
      state.mapReady = true;
      if (state.node !== null) detail(state.node, function (d) { highlight(state.node, d); });
    });
  }
  function highlight(i, d) {
    if (!state.mapReady) return;
    var X = window.KG_MAP, pts = i === null ? [] : [i].concat((d.w || []).map(function (r) { return r[0]; }));
    var order = pts.slice().reverse();  // the class itself drawn last, on top of its neighbours
    Plotly.restyle("map", {x: [order.map(function (p) { return X.x[p]; })], y: [order.map(function (p) { return X.y[p]; })],
      text: [order.map(name)], customdata: [order], "marker.size": [order.map(function (p) { return p === i ? 14 : 8; })],
      "marker.color": [order.map(function (p) { return p === i ? "#d62728" : "#ffd400"; })]}, [3]);
    state.highlighted = pts;
  }

  /* ---------------------------------------------------------------- start */
  $("runinfo").textContent = (M.model || "run").toUpperCase() + " · " + M.nodes + " nodes · " + M.run;
  $("mapkind").textContent = M.map;
  window.addEventListener("hashchange", route);
  route();
  function loadMap() {
    script("data/map.js", function () {
      script("plotly.min.js", function () { drawMap(); drawCalibration(); });
    });
  }
  // only after the first frame is on screen: plotly.js takes a while to parse, the class page comes first
  requestAnimationFrame(function () { requestAnimationFrame(function () { setTimeout(loadMap, 30); }); });
})();
