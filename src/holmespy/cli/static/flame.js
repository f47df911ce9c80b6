// holmespy serve: flame graphs drawn from the JSON each page embeds; no network, no eval.
// Each <section class="flame"> holds a <script type="application/json"> with the call
// tree ({n: name, v: value, c: children}) and gets a search box, click-to-zoom and a
// status line. Names are set with textContent only: a frame name is never markup.
(function () {
  "use strict";
  var ROW = 17;

  function amount(v, unit) {
    if (unit === "nanoseconds") {
      if (v >= 1e9) return (v / 1e9).toFixed(2) + " s";
      if (v >= 1e6) return (v / 1e6).toFixed(2) + " ms";
      return (v / 1e3).toFixed(1) + " \u00b5s";
    }
    if (unit === "bytes") {
      if (v >= 1073741824) return (v / 1073741824).toFixed(1) + " GiB";
      if (v >= 1048576) return (v / 1048576).toFixed(1) + " MiB";
      if (v >= 1024) return (v / 1024).toFixed(1) + " KiB";
      return v + " B";
    }
    return v.toLocaleString("en-US") + (unit && unit !== "count" ? " " + unit : "");
  }

  // Names are module-qualified, so the file part only crowds a box; the tooltip keeps it.
  function short(name) { return name.replace(/ \([^()]*\)$/, ""); }

  function hue(name) {
    if (name.indexOf("thread:") === 0) return "hsl(210, 35%, 72%)";
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return "hsl(" + (h % 50) + ", " + (60 + (h >> 8) % 30) + "%, " + (58 + (h >> 16) % 14) + "%)";
  }

  function setUp(section) {
    var data = JSON.parse(section.querySelector("script.flame-data").textContent);
    var root = data.root, unit = data.unit;
    var graph = section.querySelector(".graph");
    var status = section.querySelector(".status");
    var box = section.querySelector("input.search");
    var matched = section.querySelector(".matched");
    var focus = root, pattern = null;

    (function link(node, parent) {
      node.p = parent;
      (node.c || []).forEach(function (child) { link(child, node); });
    })(root, null);

    function share(v) { return (100 * v / (root.v || 1)).toFixed(2) + "%"; }
    function matches(name) { return pattern !== null && pattern.test(name); }

    function place(node, depth, left, width, cls) {
      var el = document.createElement("div");
      el.className = "frame" + (cls ? " " + cls : "") + (matches(node.n) ? " match" : "");
      el.style.left = left + "%";
      el.style.width = width + "%";
      el.style.top = (depth * ROW) + "px";
      el.style.background = hue(node.n);
      el.textContent = short(node.n);
      el.title = node.n + "\n" + amount(node.v, unit) + " (" + share(node.v) + ")";
      el.setAttribute("data-value", String(node.v));
      el.addEventListener("click", function () {
        focus = node === focus && node.p ? node.p : node;
        draw();
      });
      el.addEventListener("mouseenter", function () {
        status.textContent = node.n + "  " + amount(node.v, unit) + " (" + share(node.v) + ")";
      });
      graph.appendChild(el);
    }

    function draw() {
      graph.textContent = "";
      var ancestors = [];
      for (var a = focus.p; a; a = a.p) ancestors.unshift(a);
      ancestors.forEach(function (node, depth) { place(node, depth, 0, 100, "ancestor"); });
      var deepest = ancestors.length;
      (function lay(node, depth, left, width) {
        place(node, depth, left, width, "");
        deepest = Math.max(deepest, depth);
        var x = left;
        (node.c || []).forEach(function (child) {
          var w = width * child.v / (node.v || 1);
          if (w >= 0.05) lay(child, depth + 1, x, w);
          x += w;
        });
      })(focus, ancestors.length, 0, 100);
      graph.style.height = ((deepest + 1) * ROW) + "px";
      if (!pattern) { matched.textContent = ""; return; }
      var total = 0;
      (function walk(node) {
        if (matches(node.n)) { total += node.v; return; }  // nested matches are inside it
        (node.c || []).forEach(walk);
      })(root);
      matched.textContent = "matched " + amount(total, unit) + " (" + share(total) + ")";
    }

    function search(text) {
      pattern = null;
      if (text) {
        var re = /^\/(.*)\/$/.exec(text);
        try {
          pattern = re ? new RegExp(re[1], "i")
                       : new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i");
        } catch (e) {
          pattern = null;
        }
      }
      draw();
    }

    box.addEventListener("input", function () { search(box.value); });
    section.querySelector("button.reset").addEventListener("click", function () {
      focus = root;
      draw();
    });
    section.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { focus = root; draw(); }
    });
    var wanted = new URLSearchParams(location.hash.slice(1)).get("search");
    if (wanted) box.value = wanted;
    search(box.value);
  }

  document.querySelectorAll("section.flame").forEach(setUp);
})();
