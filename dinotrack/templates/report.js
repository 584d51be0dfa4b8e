"use strict";
// Sort the object table by the clicked column: numbers by value, text in natural order,
// empty cells last in either direction. A second click reverses the order.
for (const table of document.querySelectorAll("table.sortable")) {
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((header, column) => {
    header.tabIndex = 0;
    const sort = () => sortTable(table, headers, column);
    header.addEventListener("click", sort);
    header.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        sort();
      }
    });
  });
}

function sortTable(table, headers, column) {
  const header = headers[column];
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  headers.forEach((cell) => cell.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const numeric = header.dataset.kind === "number";
  const body = table.tBodies[0];
  const keyed = Array.from(body.rows).map((row, index) => ({ row, index, key: sortKey(row.cells[column]) }));
  keyed.sort((a, b) => compareKeys(a.key, b.key, numeric, ascending) || a.index - b.index);
  body.append(...keyed.map((entry) => entry.row));
}

function sortKey(cell) {
  return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
}

function compareKeys(a, b, numeric, ascending) {
  if (a === "" || b === "") {
    return (a === "") - (b === "");
  }
  const order = numeric ? Number(a) - Number(b) : a.localeCompare(b, undefined, { numeric: true });
  return ascending ? order : -order;
}
