// Shows every <time data-local> in the viewer's own time zone; the UTC time stays in its title.
"use strict";
(function () {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  window.offloadLocalTime = function (root) {
    for (const element of (root || document).querySelectorAll("time[data-local]")) {
      const moment = new Date(element.getAttribute("datetime"));
      if (!Number.isNaN(moment.getTime())) element.textContent = format.format(moment);
    }
  };
  window.offloadLocalTime(document);
})();
