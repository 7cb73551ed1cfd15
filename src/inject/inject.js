/*
 * gatekeeper's script for [[inject]] pages, served at /.gatekeeper/inject.js.
 *
 * gatekeeper put a container (data-gatekeeper-captcha = the captcha id) and
 * the five hidden GeeTest fields into the app's form. This script moves the
 * container before the form's submit button, shows the widget there, copies
 * the widget's result into the hidden fields on success, and holds the
 * submit until then. The app's own markup and scripts are left alone. No
 * inline script: it runs under the app's Content-Security-Policy, which
 * gatekeeper amended with the widget's origins.
 */
(function () {
  "use strict";
  var FIELDS = ["lot_number", "captcha_output", "pass_token", "gen_time", "captcha_id"];
  var chinese = /^zh\b/i.test(navigator.language || "");
  var TEXT = chinese
    ? { first: "请先完成上方的验证。", unavailable: "验证无法加载，请刷新页面。", widget: "zho" }
    : { first: "Please complete the check above first.",
        unavailable: "The check could not be loaded. Please reload the page.", widget: "eng" };

  function setUp(box) {
    var form = box.closest("form");
    if (!form) return;
    var submit = form.querySelector(
      'button:not([type]), button[type="submit"], input[type="submit"], input[type="image"]');
    if (submit && submit.parentNode) submit.parentNode.insertBefore(box, submit);
    var status = document.createElement("p");
    status.className = "gatekeeper-status";
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    box.parentNode.insertBefore(status, box.nextSibling);
    function say(text) { status.textContent = text; }

    if (typeof window.initGeetest4 !== "function") {
      // The form still posts; gatekeeper then shows its challenge page.
      say(TEXT.unavailable);
      return;
    }
    var solved = false;
    window.initGeetest4(
      { captchaId: box.getAttribute("data-gatekeeper-captcha"), product: "float", language: TEXT.widget },
      function (captcha) {
        captcha.appendTo(box);
        captcha.onSuccess(function () {
          var result = captcha.getValidate();
          if (!result) return;
          for (var i = 0; i < FIELDS.length; i++) {
            var input = form.querySelector('input[type="hidden"][name="' + FIELDS[i] + '"]');
            if (input) input.value = result[FIELDS[i]] || "";
          }
          solved = true;
          say("");
        });
        captcha.onError(function () { say(TEXT.unavailable); });
        form.addEventListener("submit", function (event) {
          if (!solved) {
            event.preventDefault();
            say(TEXT.first);
          }
        });
        // Back to a page the browser kept: its proof was spent on the post.
        window.addEventListener("pageshow", function (event) {
          if (event.persisted && solved) {
            solved = false;
            if (typeof captcha.reset === "function") captcha.reset();
          }
        });
      });
  }

  function start() {
    var boxes = document.querySelectorAll("[data-gatekeeper-captcha]");
    for (var i = 0; i < boxes.length; i++) setUp(boxes[i]);
  }
  // The scripts follow the first form: later forms are parsed after them.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
