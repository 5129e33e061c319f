// Progressive enhancement only: every page works without this file.
// <button data-copy="#input-id"> copies that input's value (the one-time token).
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) { return; }
  var input = document.querySelector(button.getAttribute("data-copy"));
  if (!input) { return; }
  function done(ok) {
    button.textContent = ok ? "Copied" : "Select and copy";
  }
  input.select();
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(input.value).then(function () { done(true); }, function () {
      done(document.execCommand("copy"));
    });
  } else {
    done(document.execCommand("copy"));
  }
});
