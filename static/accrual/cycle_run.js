// Live progress of a cycle-close run on its admin page: polls the run's JSON progress view every second while
// the run is running and updates the bar, the counts and the failures list. Loaded as a file (no inline
// script) so a strict Content-Security-Policy allows it.
(function () {
  "use strict";

  var POLL_MS = 1000;

  function setText(id, value) {
    var element = document.getElementById(id);
    if (element) {
      element.textContent = String(value);
    }
  }

  function renderFailures(list, failures) {
    while (list.firstChild) {
      list.removeChild(list.firstChild);
    }
    if (!failures.length) {
      var none = document.createElement("li");
      none.className = "none";
      none.textContent = "None.";
      list.appendChild(none);
      return;
    }
    failures.forEach(function (failure) {
      var item = document.createElement("li");
      var who = document.createElement("strong");
      who.textContent = failure.customer;
      item.appendChild(who);
      item.appendChild(document.createTextNode(" (" + failure.name + "): " + failure.error));
      list.appendChild(item);
    });
  }

  function update(box, data) {
    var bar = document.getElementById("run-bar");
    if (bar) {
      bar.value = data.percent;
      bar.textContent = data.percent + " %";
    }
    setText("run-percent", data.percent + " %");
    setText("run-status", data.status_label);
    setText("run-processed", data.processed);
    setText("run-total", data.total);
    setText("run-invoices", data.invoices);
    setText("run-failed", data.failed);
    var list = document.getElementById("run-failures");
    if (list) {
      renderFailures(list, data.failures);
    }
    box.dataset.running = data.running ? "true" : "false";
    box.dataset.refreshed = String(Number(box.dataset.refreshed || "0") + 1);
  }

  function poll(box) {
    fetch(box.dataset.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status >= 400 && response.status < 500) {
          // Logged out or no permission: retrying cannot help; say so and stop.
          setText("run-status", "Progress unavailable (HTTP " + response.status + "): reload the page.");
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        if (data === null) {
          return;
        }
        var wasRunning = box.dataset.running === "true";
        update(box, data);
        if (wasRunning && !data.running && box.dataset.reloadOnFinish === "true") {
          // The run's fields below the bar were rendered while it ran: show its final record.
          window.location.reload();
          return;
        }
        if (data.running) {
          window.setTimeout(function () { poll(box); }, POLL_MS);
        }
      })
      .catch(function () {
        // A dropped request (a restart, a network blip): try again a little later.
        window.setTimeout(function () { poll(box); }, POLL_MS * 3);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("cycle-run-progress");
    if (box && box.dataset.progressUrl) {
      box.dataset.reloadOnFinish = box.dataset.running === "true" ? "true" : "false";
      // One fetch even when the page loaded finished, so what is shown is never older than the page.
      poll(box);
    }
  });
})();
