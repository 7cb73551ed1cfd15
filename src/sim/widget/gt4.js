/*
 * A stand-in for GeeTest's gt4.js, served by gatekeeper's simulator.
 *
 * It exposes the same browser API as GeeTest CAPTCHA v4
 * (initGeetest4(config, callback); captchaObj.appendTo, showCaptcha, onReady,
 * onSuccess, onError, onClose, getValidate, reset), asks the person to drag a
 * slider, and then yields five real fields minted by the simulator. A page
 * written for this file works with GeeTest's real
 * https://static.geetest.com/v4/gt4.js and a real captcha id unchanged.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var origin = script && script.src ? new URL(script.src).origin : window.location.origin;

  function Captcha(config) {
    this.config = config || {};
    this.handlers = { ready: [], success: [], error: [], close: [] };
    this.result = null;
    this.root = null;
  }

  Captcha.prototype.fire = function (name, arg) {
    this.handlers[name].forEach(function (fn) { fn(arg); });
  };
  ["Ready", "Success", "Error", "Close"].forEach(function (name) {
    Captcha.prototype["on" + name] = function (fn) {
      this.handlers[name.toLowerCase()].push(fn);
      return this;
    };
  });

  Captcha.prototype.getValidate = function () {
    return this.result ? Object.assign({}, this.result) : false;
  };

  Captcha.prototype.render = function () {
    var self = this;
    var box = document.createElement("div");
    box.className = "gt4-standin";
    box.setAttribute("style",
      "border:1px solid #c9d2dc;border-radius:6px;padding:10px 12px;max-width:320px;" +
      "font:14px system-ui,sans-serif;background:#f7f9fb;color:#223");
    var label = document.createElement("div");
    label.textContent = "Drag the slider to the right to verify";
    label.setAttribute("style", "margin-bottom:6px");
    var slider = document.createElement("input");
    slider.type = "range";
    slider.min = "0";
    slider.max = "100";
    slider.value = "0";
    slider.className = "gt4-slider";
    slider.setAttribute("aria-label", "verification slider");
    slider.setAttribute("style", "width:100%");
    var status = document.createElement("div");
    status.className = "gt4-status";
    status.setAttribute("style", "margin-top:6px;font-size:12px;color:#667");
    status.textContent = "GeeTest simulator (offline)";
    box.appendChild(label);
    box.appendChild(slider);
    box.appendChild(status);

    function done() {
      if (self.result || slider.disabled) return;
      if (Number(slider.value) < 100) { slider.value = "0"; return; }
      slider.disabled = true;
      status.textContent = "Verifying...";
      var id = encodeURIComponent(self.config.captchaId || "");
      fetch(origin + "/_sim/mint?captcha_id=" + id, { method: "POST" })
        .then(function (r) {
          if (!r.ok) throw new Error("the simulator does not know captcha id " + self.config.captchaId);
          return r.json();
        })
        .then(function (fields) {
          self.result = fields;
          label.textContent = "Verified";
          status.textContent = "Verification succeeded";
          box.setAttribute("data-state", "success");
          self.fire("success");
        })
        .catch(function (e) {
          slider.disabled = false;
          slider.value = "0";
          status.textContent = "Verification failed: " + e.message;
          self.fire("error", { code: "simulator", msg: e.message });
        });
    }
    slider.addEventListener("change", done);
    slider.addEventListener("mouseup", done);
    slider.addEventListener("touchend", done);
    return box;
  };

  Captcha.prototype.appendTo = function (target) {
    var el = typeof target === "string" ? document.querySelector(target) : target;
    if (!el) throw new Error("appendTo: no element " + target);
    this.root = this.render();
    el.appendChild(this.root);
    return this;
  };

  /* product "bind": the page calls showCaptcha() itself, we show a modal. */
  Captcha.prototype.showCaptcha = function () {
    var self = this;
    var overlay = document.createElement("div");
    overlay.setAttribute("style",
      "position:fixed;inset:0;background:rgba(0,0,0,.35);display:flex;align-items:center;justify-content:center");
    var panel = this.render();
    panel.style.background = "#fff";
    var close = document.createElement("button");
    close.type = "button";
    close.textContent = "Close";
    close.addEventListener("click", function () { overlay.remove(); self.fire("close"); });
    panel.appendChild(close);
    overlay.appendChild(panel);
    document.body.appendChild(overlay);
    this.onSuccess(function () { overlay.remove(); });
    return this;
  };

  Captcha.prototype.reset = function () {
    this.result = null;
    if (this.root && this.root.parentNode) {
      var parent = this.root.parentNode;
      parent.removeChild(this.root);
      this.root = this.render();
      parent.appendChild(this.root);
    }
    return this;
  };

  window.initGeetest4 = function (config, callback) {
    var captcha = new Captcha(config);
    callback(captcha);
    setTimeout(function () { captcha.fire("ready"); }, 0);
  };
})();
