"""A flame graph as one self-contained HTML file: no network, no external script.

Built from collapsed stacks (`outer;...;inner VALUE` lines), so it draws any
profile the formats package can convert. The page draws the call tree root
at the top (an "icicle", as speedscope and Pyroscope do) as positioned
elements whose text is the frame name, so it renders without canvas or GPU
and a browser's find-in-page sees the names (boxes show the function, the tooltip
and the search also see the file). Click a frame to zoom to it,
click the top frame or press Escape to zoom out; the search box highlights
matching frames (a substring, or /a regex/) and says what share of the total
they hold. `#search=TEXT` and `#zoom=FRAME;FRAME…` in the URL do the same on
load, so a link can point at a finding.

Frames narrower than 1/`MIN_SHARE_DENOMINATOR` of the total are dropped
from the data: they could never be wide enough to read, and keeping them
makes pages of big profiles slow.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from holmespy.formats.collapsed import frame_label
from holmespy.formats.profile import Frame, Profile
from holmespy.printable import printable

MIN_SHARE_DENOMINATOR = 5000
MAX_DEPTH = 300
"""Frames of one stack put in a tree for a page, outermost first: its JSON and the
page's script nest a level per frame (Python's own stacks stop near 1,000)."""
MAX_NODES = 200_000
"""Distinct frames put in a tree for a page; real profiles make a few thousand."""
MAX_LABEL = 500
"""Characters of a frame's name kept."""
DEEPER = "[deeper frames not drawn]"
MORE = "[more distinct frames than a page draws]"


@dataclass
class Node:
    name: str
    value: int = 0
    children: dict[str, Node] = field(default_factory=dict)

    def as_data(self, floor: float) -> dict[str, Any]:
        kept = [c for c in self.children.values() if c.value >= floor]
        kept.sort(key=lambda c: c.name)  # stable order: two graphs of one profile look alike
        data: dict[str, Any] = {"n": self.name, "v": self.value}
        if kept:
            data["c"] = [c.as_data(floor) for c in kept]
        return data


def tree_from_collapsed(text: str, root_name: str = "all") -> Node:
    """Sum collapsed lines into a tree; lines without a numeric value are skipped."""
    root = Node(root_name)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        value = int(count)
        root.value += value
        node = root
        for name in stack.split(";"):
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = Node(name)
            child.value += value
            node = child
    return root


def tree_from_profile(profile: Profile, column: int, root_name: str = "all") -> Node:
    """The call tree of `profile`'s values in `column`, bounded for a web page.

    Built from the samples, not from collapsed text, which writes every stack
    out whole: there, a few KiB of profile whose hundreds of distinct stacks
    repeat one long name make gigabytes. Here a name is cut to `MAX_LABEL`
    characters, a stack to `MAX_DEPTH` frames, and past `MAX_NODES` the new
    frames of a stack are one node `MORE`, so values stay true at every node
    drawn. Threads are roots, as in `to_collapsed`.
    """
    totals: dict[tuple[str, tuple[Frame, ...]], int] = {}
    for sample in profile.samples:
        key = (sample.labels.get("thread", ""), sample.stack)
        totals[key] = totals.get(key, 0) + sample.values[column]
    labels: dict[Frame, str] = {}

    def label(frame: Frame) -> str:
        text = labels.get(frame)
        if text is None:
            text = labels[frame] = printable(frame_label(frame), MAX_LABEL)
        return text

    root = Node(root_name)
    nodes = 1
    for (thread, stack), value in totals.items():
        if not value:
            continue
        root.value += value
        head = [printable(f"thread:{thread}", MAX_LABEL)] if thread else []
        names = chain(head, (label(f) for f in reversed(stack))) if stack else ["[unknown]"]
        node = root
        for depth, name in enumerate(names):
            if depth == MAX_DEPTH:
                name = DEEPER
            child = node.children.get(name)
            if child is None and nodes >= MAX_NODES:
                name = MORE
                child = node.children.get(name)
            if child is None:
                child = node.children[name] = Node(name)
                nodes += 1
            child.value += value
            node = child
            if name in (DEEPER, MORE):
                break
    return root


def render_html(root: Node, *, title: str, unit: str, subtitle: str = "") -> str:
    data = root.as_data(root.value / MIN_SHARE_DENOMINATOR)
    # `<` escaped so no frame name can close the script element it is embedded in.
    payload = json.dumps({"root": data, "unit": unit}, separators=(",", ":")).replace(
        "<", "\\u003c"
    )
    return (
        _PAGE.replace("__TITLE__", html.escape(title))
        .replace("__SUBTITLE__", html.escape(subtitle))
        .replace("__DATA__", payload)
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font: 12px/1.3 system-ui, sans-serif; margin: 0; color: #222; background: #fff; }
  header { padding: 8px 12px; display: flex; gap: 12px; align-items: center; flex-wrap: wrap;
           border-bottom: 1px solid #ddd; position: sticky; top: 0; background: #fff; z-index: 2; }
  header h1 { font-size: 14px; margin: 0; }
  header .sub { color: #666; }
  #search { width: 22em; padding: 3px 6px; }
  #matched { color: #a02; }
  button { padding: 3px 8px; }
  #graph { position: relative; margin: 8px 12px; }
  .frame { position: absolute; height: 17px; box-sizing: border-box; border: 1px solid #fff;
           border-width: 0 1px 1px 0; padding: 1px 3px; overflow: hidden; white-space: nowrap;
           text-overflow: ellipsis; cursor: pointer; font: 11px/15px ui-monospace, monospace; }
  .frame:hover { filter: brightness(0.9); }
  .frame.ancestor { opacity: 0.55; }
  .frame.match { background: #e040c0 !important; color: #fff; }
  #status { padding: 4px 12px; color: #333; min-height: 1.3em; border-top: 1px solid #ddd;
            position: sticky; bottom: 0; background: #fafafa;
            font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1><span class="sub">__SUBTITLE__</span>
  <input id="search" type="search" placeholder="search frames (text or /regex/)">
  <span id="matched"></span>
  <button id="reset" type="button">Reset zoom</button>
</header>
<div id="graph"></div>
<div id="status">Click a frame to zoom in; click the top frame or press Esc to zoom out.</div>
<script id="flame-data" type="application/json">__DATA__</script>
<script>
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("flame-data").textContent);
  var ROOT = DATA.root, UNIT = DATA.unit, ROW = 17;
  var graph = document.getElementById("graph");
  var status = document.getElementById("status");
  var searchBox = document.getElementById("search");
  var matched = document.getElementById("matched");
  var focus = ROOT, pattern = null;

  (function link(node, parent) {
    node.p = parent;
    (node.c || []).forEach(function (child) { link(child, node); });
  })(ROOT, null);

  function amount(v) {
    if (UNIT === "nanoseconds") {
      if (v >= 1e9) return (v / 1e9).toFixed(2) + " s";
      if (v >= 1e6) return (v / 1e6).toFixed(2) + " ms";
      return (v / 1e3).toFixed(1) + " \\u00b5s";
    }
    if (UNIT === "bytes") {
      if (v >= 1073741824) return (v / 1073741824).toFixed(1) + " GiB";
      if (v >= 1048576) return (v / 1048576).toFixed(1) + " MiB";
      if (v >= 1024) return (v / 1024).toFixed(1) + " KiB";
      return v + " B";
    }
    return v.toLocaleString("en-US") + (UNIT && UNIT !== "count" ? " " + UNIT : "");
  }

  // Names are module-qualified, so the file part only crowds the box; the tooltip keeps it.
  function short(name) { return name.replace(/ \\([^()]*\\)$/, ""); }

  function share(v) { return (100 * v / ROOT.v).toFixed(2) + "%"; }

  function hue(name) {
    if (name.indexOf("thread:") === 0) return "hsl(210, 35%, 72%)";
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return "hsl(" + (h % 50) + ", " + (60 + (h >> 8) % 30) + "%, " + (58 + (h >> 16) % 14) + "%)";
  }

  function matches(name) {
    if (!pattern) return false;
    return pattern.test(name);
  }

  function place(node, depth, left, width, cls) {
    var el = document.createElement("div");
    el.className = "frame" + (cls ? " " + cls : "") + (matches(node.n) ? " match" : "");
    el.style.left = left + "%";
    el.style.width = width + "%";
    el.style.top = (depth * ROW) + "px";
    el.style.background = hue(node.n);
    el.textContent = short(node.n);
    el.title = node.n + "\\n" + amount(node.v) + " (" + share(node.v) + ")";
    el.setAttribute("data-value", String(node.v));
    el.addEventListener("click", function () { zoom(node === focus && node.p ? node.p : node); });
    el.addEventListener("mouseenter", function () {
      status.textContent = node.n + "  " + amount(node.v) + " (" + share(node.v) + " of all)";
    });
    graph.appendChild(el);
  }

  function draw() {
    graph.textContent = "";
    var ancestors = [];
    for (var a = focus.p; a; a = a.p) ancestors.unshift(a);
    ancestors.forEach(function (node, depth) { place(node, depth, 0, 100, "ancestor"); });
    var maxDepth = ancestors.length;
    (function lay(node, depth, left, width) {
      place(node, depth, left, width, "");
      maxDepth = Math.max(maxDepth, depth);
      var x = left;
      (node.c || []).forEach(function (child) {
        var w = width * child.v / node.v;
        if (w >= 0.02) lay(child, depth + 1, x, w);
        x += w;
      });
    })(focus, ancestors.length, 0, 100);
    graph.style.height = ((maxDepth + 1) * ROW) + "px";
    showMatched();
  }

  function showMatched() {
    if (!pattern) { matched.textContent = ""; return; }
    var total = 0;
    (function walk(node) {
      if (matches(node.n)) { total += node.v; return; }  // nested matches are inside this one
      (node.c || []).forEach(walk);
    })(ROOT);
    matched.textContent = "matched " + amount(total) + " (" + share(total) + ")";
  }

  function zoom(node) {
    focus = node;
    draw();
  }

  function setSearch(text) {
    pattern = null;
    if (text) {
      var re = /^\\/(.*)\\/$/.exec(text);
      try {
        pattern = re ? new RegExp(re[1], "i")
                     : new RegExp(text.replace(/[.*+?^${}()|[\\]\\\\]/g, "\\\\$&"), "i");
      } catch (e) {
        pattern = null;
      }
    }
    draw();
  }

  function fromHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    var path = params.get("zoom");
    if (path) {
      var node = ROOT;
      path.split(";").forEach(function (name) {
        var next = (node.c || []).filter(function (c) { return c.n === name; })[0];
        if (next) node = next;
      });
      focus = node;
    }
    var text = params.get("search");
    if (text) searchBox.value = text;
    setSearch(searchBox.value);
  }

  searchBox.addEventListener("input", function () { setSearch(searchBox.value); });
  document.getElementById("reset").addEventListener("click", function () { zoom(ROOT); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") zoom(ROOT); });
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
</script>
</body>
</html>
"""
