/* Sort a table.sortable by the column whose header is clicked (again: reverse). Cells sort
   on their data-sort attribute (else their text); numeric columns put empty keys last. */
(function () {
  "use strict";
  function key(cell, numeric) {
    var v = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (!numeric) return v.toLowerCase();
    return v === "" ? NaN : parseFloat(v);
  }
  function compare(x, y, numeric, asc) {
    if (numeric) {
      if (isNaN(x) || isNaN(y)) return (isNaN(x) ? 1 : 0) - (isNaN(y) ? 1 : 0);
      return asc ? x - y : y - x;
    }
    return asc ? x.localeCompare(y) : y.localeCompare(x);
  }
  function sortBy(table, th) {
    var headers = Array.prototype.slice.call(th.parentNode.children);
    var index = headers.indexOf(th);
    var numeric = th.getAttribute("data-type") === "num";
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      return compare(key(a.cells[index], numeric), key(b.cells[index], numeric), numeric, asc);
    });
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll(":scope > thead th").forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  });
})();
/* Provenance panels: one open at a time; Esc or a click outside closes it. */
(function () {
  "use strict";
  var panels = Array.prototype.slice.call(document.querySelectorAll("details.prov"));
  function closeAll(except) {
    panels.forEach(function (d) { if (d !== except) d.removeAttribute("open"); });
  }
  panels.forEach(function (d) {
    d.addEventListener("toggle", function () { if (d.open) closeAll(d); });
  });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") closeAll(null); });
  document.addEventListener("click", function (e) {
    if (!e.target.closest("details.prov")) closeAll(null);
  });
})();
