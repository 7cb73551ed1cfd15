/*
 * gatekeeper's challenge page script, served at /.gatekeeper/challenge.js.
 *
 * The page holds no inline script (it runs under a strict
 * Content-Security-Policy): its data is in data-* attributes of
 * #gatekeeper-captcha. The widget script (GeeTest's gt4.js, or the
 * simulator's stand-in) is loaded before this one. On success the widget's
 * five fields are added to the hidden release form (the page does not carry
 * them, to stay short), which is then submitted: a plain form post, so the
 * browser follows whatever the application answers.
 */
(function () {
  "use strict";
  var FIELDS = ["lot_number", "captcha_output", "pass_token", "gen_time", "captcha_id"];
  var box = document.getElementById("gatekeeper-captcha");
  var form = document.getElementById("gatekeeper-release");
  var status = document.getElementById("gatekeeper-status");
  if (!box || !form) return;

  function say(text) {
    if (status) status.textContent = text;
  }

  if (typeof window.initGeetest4 !== "function") {
    say(box.getAttribute("data-unavailable") || "");
    return;
  }
  window.initGeetest4(
    {
      captchaId: box.getAttribute("data-captcha-id"),
      product: "float",
      language: box.getAttribute("data-language")
    },
    function (captcha) {
      captcha.appendTo(box);
      captcha.onSuccess(function () {
        var result = captcha.getValidate();
        if (!result) return;
        for (var i = 0; i < FIELDS.length; i++) {
          var input = form.elements.namedItem(FIELDS[i]);
          if (!input) {
            input = document.createElement("input");
            input.type = "hidden";
            input.name = FIELDS[i];
            form.appendChild(input);
          }
          input.value = result[FIELDS[i]] || "";
        }
        say(box.getAttribute("data-sending") || "");
        form.submit();
      });
      captcha.onError(function () {
        say(box.getAttribute("data-unavailable") || "");
      });
    }
  );
})();
