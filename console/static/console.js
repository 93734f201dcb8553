// fleetwatch console: the approval and pause buttons. They call the same JSON API as every
// other client (/api/v1/remediations/...), with the browser's own credentials, and show the
// API's error when it refuses; on success the page reloads to show the new state.
(function () {
  'use strict';
  function showError(msg) {
    var el = document.getElementById('action-error');
    if (!el) { window.alert(msg); return; }
    el.textContent = msg;
    el.hidden = false;
  }
  function act(button) {
    var id = button.getAttribute('data-remediation');
    var comment = '';
    if (id) {
      var input = document.querySelector('input[data-comment-for="' + id + '"]');
      if (input) { comment = input.value; }
    }
    button.disabled = true;
    fetch(button.getAttribute('data-url'), {
      method: 'POST',
      credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'Accept': 'application/json'},
      body: JSON.stringify({comment: comment})
    }).then(function (resp) {
      if (resp.ok) { window.location.reload(); return; }
      return resp.text().then(function (text) {
        var msg = text;
        try { var body = JSON.parse(text); if (body && body.error) { msg = body.error; } } catch (e) { /* not JSON: show it as it is */ }
        showError(button.getAttribute('data-action') + ' failed (' + resp.status + '): ' + msg);
        button.disabled = false;
      });
    }).catch(function (err) {
      showError(button.getAttribute('data-action') + ' failed: ' + err);
      button.disabled = false;
    });
  }
  document.addEventListener('click', function (ev) {
    var button = ev.target.closest && ev.target.closest('button.act[data-url]');
    if (button) { ev.preventDefault(); act(button); }
  });
}());
