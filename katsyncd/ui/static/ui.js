// katsyncd status pages: refresh the overview's live part without reloading the page.
// The server renders (and escapes) the fragment; this only swaps it in.
"use strict";
(function () {
  var box = document.getElementById("live");
  if (!box) { return; }
  var every = parseInt(box.getAttribute("data-every"), 10) || 3000;
  function refresh() {
    fetch(box.getAttribute("data-src"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.text(); })
      .then(function (html) { box.innerHTML = html; box.classList.remove("stale"); })
      .catch(function () { box.classList.add("stale"); })
      .finally(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
