/*
 * A stand-in for GeeTest's gt4.js, served by gatekeeper's simulator.
 *
 * It has the surface of GeeTest CAPTCHA v4's web widget as GeeTest's "Web"
 * API reference documents it, so a page written for GeeTest works with this
 * file unchanged but for the script URL:
 *
 *   initGeetest4(config, callback)         callback(captcha), asynchronously
 *   captcha.appendTo(selector | element)   float, popup; a no-op in bind mode
 *   captcha.showCaptcha() / showBox()      opens the challenge (bind, popup)
 *   captcha.getValidate()                  the five fields, or false
 *   captcha.reset()   captcha.destroy()
 *   captcha.onReady / onNextReady / onSuccess / onFail / onError / onClose /
 *          onBoxShow (fn)
 *
 * appendTo, showCaptcha, showBox, reset and every on* return the captcha, so
 * calls chain. Config: product float (inline), popup (a button that opens a
 * dialog) or bind (nothing until showCaptcha); language zho or eng ("en",
 * "zh-cn" and the like accepted; absent: the browser's language; others:
 * English, GeeTest's documented fallback); nativeButton, mask, hideBar,
 * hideSuccess, nextWidth, timeout, protocol and apiServers are honoured;
 * riskType, rem, userInfo are accepted and ignored.
 *
 * The challenge is a slider: drag it to the end, or focus it and use the
 * arrow keys, then Enter or End. A short release says "try again" and fires
 * onFail. Success mints five real fields from the simulator's /_sim/mint.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var scriptOrigin = script && script.src ? new URL(script.src).origin : window.location.origin;
  // A page may list GeeTest's own API hosts: the simulator cannot be them.
  var GEETEST_HOST = /(^|\.)(geetest|geevisit|gsensebot)\.com$/i;
  var PRODUCTS = ["float", "popup", "bind"];
  var EVENTS = {
    Ready: "ready", NextReady: "nextReady", Success: "success", Fail: "fail",
    Error: "error", Close: "close", BoxShow: "boxShow"
  };
  var TEXT = {
    eng: {
      prompt: "Drag the slider all the way to the right",
      handle: "Verification slider: drag it to the right, or press End",
      button: "Click to verify",
      dialog: "Verification",
      verifying: "Verifying\u2026",
      success: "Verification succeeded",
      fail: "Not far enough. Try again: drag all the way to the right.",
      error: "Verification failed: ",
      close: "Close",
      refresh: "New challenge",
      small: "GeeTest simulator (offline): not a real captcha"
    },
    zho: {
      prompt: "\u8bf7\u5c06\u6ed1\u5757\u62d6\u5230\u6700\u53f3\u8fb9",
      handle: "\u9a8c\u8bc1\u6ed1\u5757\uff1a\u5411\u53f3\u62d6\u52a8\uff0c\u6216\u6309 End \u952e",
      button: "\u70b9\u51fb\u6309\u94ae\u8fdb\u884c\u9a8c\u8bc1",
      dialog: "\u5b89\u5168\u9a8c\u8bc1",
      verifying: "\u9a8c\u8bc1\u4e2d\u2026",
      success: "\u9a8c\u8bc1\u6210\u529f",
      fail: "\u672a\u62d6\u5230\u7ec8\u70b9\uff0c\u8bf7\u518d\u8bd5\u4e00\u6b21",
      error: "\u9a8c\u8bc1\u51fa\u9519\uff1a",
      close: "\u5173\u95ed",
      refresh: "\u6362\u4e00\u4e2a",
      small: "GeeTest \u6a21\u62df\u5668\uff08\u79bb\u7ebf\uff09\uff1a\u975e\u771f\u5b9e\u9a8c\u8bc1\u7801 \u00b7 GeeTest simulator (offline)"
    }
  };

  var seq = 0;

  function language(value) {
    var l = String(value || (navigator && navigator.language) || "eng").toLowerCase();
    return /^zh/.test(l) ? "zho" : "eng";
  }

  // The look is a stylesheet beside this script (as GeeTest's own is), not an
  // inline <style>: it loads under a page's strict style-src.
  var styleUrl = script && script.src ? new URL("gt4.css", script.src).href : "/gt4.css";

  function loadStyle(done) {
    var link = document.getElementById("gt4-standin-style");
    if (!link) {
      link = document.createElement("link");
      link.id = "gt4-standin-style";
      link.rel = "stylesheet";
      link.href = styleUrl;
      (document.head || document.documentElement).appendChild(link);
    } else if (link.sheet || link.getAttribute("data-done")) {
      if (done) done();
      return;
    }
    link.addEventListener("load", function () { link.setAttribute("data-done", "1"); if (done) done(); });
    link.addEventListener("error", function () { link.setAttribute("data-done", "1"); if (done) done(); });
  }

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) e.className = className;
    if (text) e.textContent = text;
    return e;
  }

  function Captcha(config) {
    this.config = config;
    this.product = PRODUCTS.indexOf(config.product) >= 0 ? config.product : "float";
    this.lang = language(config.language);
    this.t = TEXT[this.lang];
    this.id = "gt4-" + (++seq);
    this.handlers = {};
    for (var k in EVENTS) this.handlers[EVENTS[k]] = [];
    this.result = null;
    this.root = null;      // what appendTo put in the page
    this.modal = null;     // the popup / bind dialog
    this.challenge = null; // the slider currently shown
    this.ready = false;
    this.destroyed = false;
  }

  Object.keys(EVENTS).forEach(function (name) {
    Captcha.prototype["on" + name] = function (fn) {
      if (typeof fn === "function" && !this.destroyed) this.handlers[EVENTS[name]].push(fn);
      return this;
    };
  });

  Captcha.prototype.fire = function (name, arg) {
    this.handlers[name].slice().forEach(function (fn) { fn(arg); });
  };

  /* GeeTest's error object: {code, msg, desc: {detail}}. */
  Captcha.prototype.raise = function (code, msg) {
    var error = { code: code, msg: msg, desc: { detail: msg } };
    if (typeof this.config.onError === "function") this.config.onError(error);
    if (this.handlers.error.length === 0 && typeof this.config.onError !== "function") {
      throw new Error("gt4.js: " + msg);
    }
    this.fire("error", error);
  };

  Captcha.prototype.apiOrigin = function () {
    var servers = this.config.apiServers;
    var host = Array.isArray(servers) && servers.length ? String(servers[0]) : "";
    var bare = host.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
    if (!host || GEETEST_HOST.test(bare.replace(/:\d+$/, ""))) return scriptOrigin;
    if (/^[a-z]+:\/\//i.test(host)) return host.replace(/\/+$/, "");
    return (this.config.protocol || window.location.protocol + "//") + bare;
  };

  /* The slider: returns its element; `this.challenge` points to it. */
  Captcha.prototype.buildChallenge = function () {
    var self = this, t = this.t, id = this.id + "-" + (++seq);
    var box = el("div", "gt4-challenge");
    box.setAttribute("data-state", "idle");
    var prompt = el("p", "gt4-prompt", t.prompt);
    prompt.id = id + "-prompt";
    var track = el("div", "gt4-track");
    var fill = el("div", "gt4-fill");
    var handle = el("div", "gt4-handle", "\u276f");
    handle.setAttribute("role", "slider");
    handle.setAttribute("tabindex", "0");
    handle.setAttribute("aria-label", t.handle);
    handle.setAttribute("aria-valuemin", "0");
    handle.setAttribute("aria-valuemax", "100");
    handle.setAttribute("aria-valuenow", "0");
    var status = el("div", "gt4-status");
    status.id = id + "-status";
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    handle.setAttribute("aria-describedby", prompt.id + " " + status.id);
    track.appendChild(fill);
    track.appendChild(handle);
    box.appendChild(prompt);
    box.appendChild(track);
    box.appendChild(status);
    box.appendChild(el("div", "gt4-small", t.small));

    var p = 0, drag = null, busy = false;
    function state(s, message) {
      box.setAttribute("data-state", s);
      status.textContent = message || "";
      if (self.root && self.product === "float") self.root.setAttribute("data-state", s);
    }
    function move(to) {
      p = Math.max(0, Math.min(1, to));
      track.style.setProperty("--p", String(p));
      handle.setAttribute("aria-valuenow", String(Math.round(p * 100)));
      handle.setAttribute("aria-valuetext", Math.round(p * 100) + "%");
    }
    function snapBack() {
      box.classList.add("gt4-snap");
      move(0);
      setTimeout(function () { box.classList.remove("gt4-snap"); }, 300);
    }
    function complete() {
      if (busy || self.destroyed) return;
      busy = true;
      box.classList.remove("gt4-snap");
      move(1);
      state("verifying", t.verifying);
      self.verify().then(function (fields) {
        if (self.challenge !== box) return;
        self.result = fields;
        handle.textContent = "\u2714";
        handle.setAttribute("aria-disabled", "true");
        handle.setAttribute("aria-valuetext", t.success);
        state("success", "\u2714 " + t.success);
        self.succeeded();
      }, function (e) {
        if (self.challenge !== box) return;
        busy = false;
        snapBack();
        state("error", t.error + e.message);
        self.raise("60101", e.message);
      });
    }
    function shortRelease() {
      snapBack();
      state("fail", t.fail);
      self.fire("fail", { captcha_id: self.config.captchaId, captcha_type: "slide", msg: "short release" });
    }
    handle.addEventListener("pointerdown", function (e) {
      if (busy) return;
      e.preventDefault();
      handle.focus();
      if (handle.setPointerCapture) handle.setPointerCapture(e.pointerId);
      drag = { x: e.clientX, p: p };
      if (box.getAttribute("data-state") !== "idle") state("idle");
    });
    handle.addEventListener("pointermove", function (e) {
      if (!drag) return;
      var room = track.clientWidth - handle.offsetWidth;
      move(drag.p + (e.clientX - drag.x) / (room > 0 ? room : 1));
    });
    function release() {
      if (!drag) return;
      drag = null;
      if (p >= 0.97) complete(); else shortRelease();
    }
    handle.addEventListener("pointerup", release);
    handle.addEventListener("pointercancel", function () { drag = null; snapBack(); });
    handle.addEventListener("keydown", function (e) {
      if (busy) return;
      var step = { ArrowRight: 0.1, ArrowUp: 0.1, ArrowLeft: -0.1, ArrowDown: -0.1, PageUp: 0.25, PageDown: -0.25 }[e.key];
      if (step !== undefined) {
        e.preventDefault();
        if (box.getAttribute("data-state") !== "idle") state("idle");
        move(Math.round((p + step) * 100) / 100);
      } else if (e.key === "Home") {
        e.preventDefault();
        move(0);
      } else if (e.key === "End" || e.key === "Enter") {
        e.preventDefault();
        complete();
      }
    });
    this.challenge = box;
    return box;
  };

  /* Asks the simulator for five real fields. */
  Captcha.prototype.verify = function () {
    var self = this;
    var url = this.apiOrigin() + "/_sim/mint?captcha_id=" + encodeURIComponent(this.config.captchaId || "");
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timeout = Number(this.config.timeout) > 0 ? Number(this.config.timeout) : 30000;
    var timer = controller ? setTimeout(function () { controller.abort(); }, timeout) : null;
    return fetch(url, { method: "POST", signal: controller ? controller.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("the simulator does not know captcha id " + self.config.captchaId);
        return r.json();
      })
      .catch(function (e) {
        throw new Error(e && e.name === "AbortError" ? "timed out after " + timeout + " ms" : e.message);
      })
      .finally(function () { if (timer) clearTimeout(timer); });
  };

  Captcha.prototype.succeeded = function () {
    var self = this;
    if (this.product === "popup" && this.root) this.renderButton();
    this.fire("success");
    if (this.modal) {
      var delay = this.product === "bind" && this.config.hideSuccess ? 0 : 700;
      var modal = this.modal;
      setTimeout(function () { if (self.modal === modal) self.closeModal(false); }, delay);
    }
  };

  /* popup: the button in the page that opens the dialog. */
  Captcha.prototype.renderButton = function () {
    var self = this, t = this.t;
    var done = !!this.result;
    this.root.textContent = "";
    this.root.setAttribute("data-state", done ? "success" : "idle");
    var button = el("button", "gt4-button");
    button.type = "button";
    var nb = this.config.nativeButton || {};
    if (nb.width) button.style.width = nb.width;
    if (nb.height) button.style.height = nb.height;
    button.appendChild(el("span", "gt4-dot", done ? "\u2714" : ""));
    button.appendChild(el("span", "gt4-label", done ? t.success : t.button));
    button.setAttribute("aria-haspopup", "dialog");
    if (done) button.setAttribute("aria-disabled", "true");
    button.addEventListener("click", function () { if (!self.result) self.openModal(); });
    this.root.appendChild(button);
    var small = el("div", "gt4-small", t.small);
    this.root.appendChild(small);
  };

  Captcha.prototype.appendTo = function (target) {
    if (this.destroyed || this.product === "bind") return this;
    var host = typeof target === "string" ? document.querySelector(target) : target;
    if (!host || !host.appendChild) {
      this.raise("60002", "appendTo: no element " + target);
      return this;
    }
    loadStyle();
    if (this.root) this.root.remove();
    this.root = el("div", "gt4-standin");
    this.root.setAttribute("data-product", this.product);
    this.root.setAttribute("data-lang", this.lang);
    this.root.setAttribute("lang", this.lang === "zho" ? "zh" : "en");
    host.appendChild(this.root);
    if (this.product === "popup") {
      this.renderButton();
    } else {
      var nb = this.config.nativeButton || {};
      var box = this.buildChallenge();
      if (nb.width) box.style.width = nb.width;
      this.root.setAttribute("data-state", "idle");
      this.root.appendChild(box);
      if (this.ready) this.fire("nextReady");
    }
    return this;
  };

  Captcha.prototype.openModal = function () {
    var self = this, t = this.t, mask = this.config.mask || {};
    var hide = Array.isArray(this.config.hideBar) ? this.config.hideBar : [];
    loadStyle();
    if (this.modal) this.closeModal(false);
    this.result = null;
    var opener = document.activeElement;
    var modal = el("div", "gt4-modal");
    modal.setAttribute("role", "dialog");
    modal.setAttribute("aria-modal", "true");
    modal.setAttribute("aria-label", t.dialog);
    modal.setAttribute("data-product", this.product);
    modal.setAttribute("data-lang", this.lang);
    modal.setAttribute("lang", this.lang === "zho" ? "zh" : "en");
    modal.style.background = mask.bgColor || "#0000004d";
    var panel = el("div", "gt4-panel");
    panel.style.width = this.config.nextWidth || "340px";
    var bar = el("div", "gt4-bar");
    bar.appendChild(el("span", "", t.dialog));
    var slot = el("div");
    if (hide.indexOf("refresh") < 0) {
      var refresh = el("button", "gt4-refresh", "\u21bb");
      refresh.type = "button";
      refresh.setAttribute("aria-label", t.refresh);
      refresh.addEventListener("click", function () {
        slot.textContent = "";
        slot.appendChild(self.buildChallenge());
        self.fire("nextReady");
      });
      bar.appendChild(refresh);
    }
    if (hide.indexOf("close") < 0) {
      var close = el("button", "gt4-close", "\u2715");
      close.type = "button";
      close.setAttribute("aria-label", t.close);
      close.addEventListener("click", function () { self.closeModal(true); });
      bar.appendChild(close);
    }
    slot.appendChild(this.buildChallenge());
    panel.appendChild(bar);
    panel.appendChild(slot);
    modal.appendChild(panel);
    modal.addEventListener("click", function (e) {
      if (e.target === modal && mask.outside !== false) self.closeModal(true);
    });
    modal.addEventListener("keydown", function (e) {
      if (e.key === "Escape") self.closeModal(true);
    });
    this.modal = modal;
    this.opener = opener;
    document.body.appendChild(modal);
    this.fire("nextReady");
    var handle = modal.querySelector(".gt4-handle");
    if (handle) handle.focus();
    this.fire("boxShow");
  };

  Captcha.prototype.closeModal = function (byUser) {
    if (!this.modal) return;
    this.modal.remove();
    this.modal = null;
    if (!this.result) this.challenge = null;
    if (this.opener && this.opener.focus && document.contains(this.opener)) this.opener.focus();
    if (byUser) this.fire("close");
  };

  Captcha.prototype.showCaptcha = function () {
    if (this.destroyed) return this;
    if (this.product === "float") {
      var handle = this.root && this.root.querySelector(".gt4-handle");
      if (handle) handle.focus();
      return this;
    }
    this.openModal();
    return this;
  };
  /* The name GeeTest's own bind demos use. */
  Captcha.prototype.showBox = Captcha.prototype.showCaptcha;

  Captcha.prototype.getValidate = function () {
    return this.result ? Object.assign({}, this.result) : false;
  };

  Captcha.prototype.reset = function () {
    if (this.destroyed) return this;
    this.result = null;
    this.challenge = null;
    this.closeModal(false);
    if (this.root && this.product === "popup") this.renderButton();
    if (this.root && this.product === "float") {
      this.root.textContent = "";
      this.root.setAttribute("data-state", "idle");
      var box = this.buildChallenge();
      var nb = this.config.nativeButton || {};
      if (nb.width) box.style.width = nb.width;
      this.root.appendChild(box);
      if (this.ready) this.fire("nextReady");
    }
    return this;
  };

  Captcha.prototype.destroy = function () {
    this.closeModal(false);
    if (this.root) this.root.remove();
    this.root = null;
    this.challenge = null;
    this.result = null;
    this.destroyed = true;
    for (var k in this.handlers) this.handlers[k] = [];
  };

  Captcha.prototype.start = function () {
    if (this.destroyed) return;
    if (!this.config.captchaId) {
      this.raise("60001", "captchaId is missing");
      return;
    }
    this.ready = true;
    this.fire("ready");
    if (this.product === "float" && this.challenge) this.fire("nextReady");
  };

  window.initGeetest4 = function (config, callback) {
    var captcha = new Captcha(config || {});
    // GeeTest answers after loading its resources: never synchronously.
    loadStyle(function () {
      setTimeout(function () {
        if (typeof callback === "function") callback(captcha);
        setTimeout(function () { captcha.start(); }, 0);
      }, 0);
    });
  };
})();
