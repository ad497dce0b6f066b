"""The viewer's stylesheet and scripts, inlined into every page (a page opens from disk
with no server and asks no other host for anything)."""

from __future__ import annotations

CSS = """
:root { --fg:#1d232b; --muted:#5d6773; --line:#d7dce2; --bg:#f6f7f9; --card:#fff;
  --ok:#1e7a46; --okbg:#e8f5ed; --bad:#b3261e; --badbg:#fdecea; --accent:#2f5bd3;
  --accbg:#eaf0ff; --warn:#8a5a00; --warnbg:#fff4dc; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--fg); background:var(--bg); }
main { max-width:1500px; margin:0 auto; padding:16px 20px 40px; }
h1 { font-size:20px; margin:4px 0 10px; }
h2 { font-size:16px; margin:0; }
a { color:var(--accent); }
pre, code { font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
pre { white-space:pre-wrap; word-break:break-word; margin:0; }
.facts { display:flex; flex-wrap:wrap; gap:6px 18px; margin:0 0 12px; padding:10px 12px;
  background:var(--card); border:1px solid var(--line); border-radius:8px; }
.facts div { white-space:nowrap; }
.facts b { color:var(--muted); font-weight:600; margin-right:4px; }
section.block { background:var(--card); border:1px solid var(--line); border-radius:8px;
  margin:0 0 14px; padding:10px 12px; }
.head { display:flex; flex-wrap:wrap; align-items:baseline; gap:6px 14px; margin-bottom:8px; }
.head .sub { color:var(--muted); }
.answer-box { border:2px solid var(--ok); background:var(--okbg); }
.answer-box pre { font-size:13.5px; }
.msg { border-left:3px solid var(--line); padding:2px 8px; margin:6px 0; }
.msg .role { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(300px,1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:8px; padding:8px 10px; background:#fff;
  display:flex; flex-direction:column; gap:6px; min-width:0; }
.card.is-answer { border:2px solid var(--ok); box-shadow:0 0 0 3px var(--okbg); }
.card.failed { border:2px solid var(--bad); background:var(--badbg); }
.card.derived { border-style:dashed; }
.card .title { display:flex; flex-wrap:wrap; gap:4px 6px; align-items:center; }
.card .text { max-height:22em; overflow:auto; padding:6px 8px; background:var(--bg);
  border-radius:6px; }
.meta { display:grid; grid-template-columns:auto 1fr; gap:1px 8px; font-size:12.5px; }
.meta dt { color:var(--muted); }
.meta dd { margin:0; overflow-wrap:anywhere; }
.badge { display:inline-block; padding:0 7px; border-radius:10px; font-size:12px;
  border:1px solid var(--line); background:var(--bg); white-space:nowrap; }
.badge.answer { background:var(--ok); color:#fff; border-color:var(--ok); }
.badge.fail { background:var(--bad); color:#fff; border-color:var(--bad); }
.badge.rule, .badge.event { background:var(--accbg); border-color:#c3d0f5; color:#1c3a8c; }
.badge.warn { background:var(--warnbg); border-color:#f0d08a; color:var(--warn); }
.error { border:1px solid var(--bad); color:var(--bad); background:#fff; border-radius:6px;
  padding:4px 8px; }
.error b { display:block; }
.events { display:flex; flex-wrap:wrap; gap:4px; }
.label { color:var(--muted); font-size:12px; }
.calls ul { margin:2px 0; padding-left:18px; }
.calls .args { background:var(--bg); padding:2px 6px; border-radius:4px; }
details summary { cursor:pointer; color:var(--muted); font-size:12px; }
del.rm { background:#fbd3d0; color:#7d1a14; text-decoration:line-through; }
ins.add { background:#cdeed8; color:#114d2b; text-decoration:none; }
.note { color:var(--muted); font-style:italic; }
.diff { display:none; }
body.diff-on .diff { display:block; }
body.diff-on .plain { display:none; }
.toolbar { display:flex; flex-wrap:wrap; gap:10px 18px; align-items:center; margin:0 0 12px; }
.toolbar input[type=search] { padding:4px 8px; min-width:220px; }
table.rows { width:100%; border-collapse:collapse; background:var(--card);
  border:1px solid var(--line); }
table.rows th, table.rows td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line);
  vertical-align:top; }
table.rows th { background:var(--bg); font-weight:600; white-space:nowrap; }
table.rows td.num { text-align:right; white-space:nowrap; font-variant-numeric:tabular-nums; }
table.rows tr.failed td { background:var(--badbg); }
td.preview { max-width:520px; overflow-wrap:anywhere; }
td.err { color:var(--bad); max-width:420px; overflow-wrap:anywhere; }
.status-ok { color:var(--ok); font-weight:600; }
.status-failed { color:var(--bad); font-weight:600; }
"""

RUN_JS = """
(function () {
  var box = document.getElementById('show-diff');
  if (!box) { return; }
  function apply() { document.body.classList.toggle('diff-on', box.checked); }
  box.addEventListener('change', apply);
  apply();
})();
"""

INDEX_JS = """
(function () {
  var body = document.getElementById('rows');
  var rows = Array.prototype.slice.call(body.rows);
  var failed = document.getElementById('failed-only');
  var sort = document.getElementById('sort');
  var text = document.getElementById('filter');
  var shown = document.getElementById('shown');
  function num(row, key) {
    var v = row.getAttribute('data-' + key);
    return v === null || v === '' ? null : parseFloat(v);
  }
  function byKey(key, lowFirst) {
    return function (a, b) {
      var x = num(a, key), y = num(b, key);
      if (x === null || y === null) {
        if (x !== y) { return x === null ? 1 : -1; }
      } else if (x !== y) {
        return lowFirst ? x - y : y - x;
      }
      return num(a, 'pos') - num(b, 'pos');
    };
  }
  function update() {
    var query = text.value.toLowerCase();
    var order = rows.slice();
    var choice = sort.value;
    if (choice !== 'input') {
      var low = choice.charAt(0) === '-';
      order.sort(byKey(low ? choice.slice(1) : choice, low));
    }
    var count = 0;
    order.forEach(function (row) {
      var keep = (!failed.checked || row.getAttribute('data-status') === 'failed') &&
        (!query || row.textContent.toLowerCase().indexOf(query) >= 0);
      row.hidden = !keep;
      if (keep) { count += 1; }
      body.appendChild(row);
    });
    shown.textContent = count + ' of ' + rows.length + ' rows shown';
  }
  failed.addEventListener('change', update);
  sort.addEventListener('change', update);
  text.addEventListener('input', update);
  update();
})();
"""


def page(title: str, body: str, script: str) -> str:
    """A whole HTML document: ``title`` must be escaped already, as must ``body``."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{title}</title><style>{CSS}</style></head>\n"
            f"<body><main>{body}</main><script>{script}</script></body></html>\n")
