// Drives the simulator's gt4.js in headless Chromium through pages written the
// way GeeTest's documentation shows (tests/browser/pages), one per product mode
// and one in English, with a real mouse and the keyboard:
//   node widget.mjs SIMULATOR_URL OUT_DIR CAPTCHA_KEY
// Serves the pages itself, plus the site back end they call (demo/login), which
// validates the five fields against the simulator as a real back end would.
// Exits non-zero with a message on the first failed expectation.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const [sim, out, key] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const pages = fileURLToPath(new URL("./pages/", import.meta.url));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const FIELDS = ["lot_number", "captcha_output", "pass_token", "gen_time", "captcha_id"];
const METHODS = ["appendTo", "showCaptcha", "showBox", "getValidate", "reset", "destroy", "onReady",
  "onNextReady", "onSuccess", "onFail", "onError", "onClose", "onBoxShow"];

function expect(cond, what) {
  if (!cond) {
    console.error("FAILED: " + what);
    process.exit(1);
  }
  console.log("ok - " + what);
}

// The site's back end: GeeTest's secondary validation against the simulator.
const validations = [];
const site = createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/demo/login") {
    const p = url.searchParams;
    const form = new URLSearchParams({
      lot_number: p.get("lot_number") || "",
      captcha_output: p.get("captcha_output") || "",
      pass_token: p.get("pass_token") || "",
      gen_time: p.get("gen_time") || "",
      sign_token: createHmac("sha256", key).update(p.get("lot_number") || "").digest("hex"),
    });
    const answer = await fetch(`${sim}/validate?captcha_id=${encodeURIComponent(p.get("captcha_id") || "")}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: form.toString(),
    }).then((r) => r.json());
    validations.push(answer);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ result: answer.result || "fail", reason: answer.reason || answer.msg || "" }));
    return;
  }
  if (url.pathname === "/favicon.ico") {
    res.writeHead(204);
    res.end();
    return;
  }
  try {
    // Only the script URL differs from a page written for GeeTest.
    const html = readFileSync(join(pages, url.pathname.replace(/[^a-z0-9.-]/gi, "")), "utf8")
      .replaceAll("http://127.0.0.1:9000", sim);
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(html);
  } catch {
    res.writeHead(404);
    res.end("not found");
  }
});
await new Promise((ok) => site.listen(0, "127.0.0.1", ok));
const base = `http://127.0.0.1:${site.address().port}`;

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function open(name, locale) {
  const context = await browser.newContext({ locale, viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${base}/${name}`);
  await page.waitForFunction(() => !!window.captchaObj);
  await page.waitForFunction(() => document.querySelector("#events").textContent.includes("ready"));
  page.shot = (n) => page.screenshot({ path: join(out, n + ".png"), fullPage: true });
  page.events = () => page.$$eval("#events li", (li) => li.map((l) => l.textContent));
  page.done = async () => {
    expect(errors.length === 0, `${name}: no console errors (${errors.join(" | ")})`);
    await context.close();
  };
  return page;
}

// A real mouse drag of the slider handle, released at `fraction` of the track.
async function drag(page, scope, fraction) {
  // After a short release the handle glides back for 250 ms; a box read
  // mid-glide puts the press beside the handle on a loaded machine.
  await page.waitForFunction((s) => !document.querySelector(`${s} .gt4-snap`), scope);
  await page.locator(`${scope} .gt4-handle`).hover();
  const handle = await page.locator(`${scope} .gt4-handle`).boundingBox();
  const track = await page.locator(`${scope} .gt4-track`).boundingBox();
  const x = handle.x + handle.width / 2, y = handle.y + handle.height / 2;
  await page.mouse.move(x, y);
  await page.mouse.down();
  await page.mouse.move(x + (track.width - handle.width) * fraction, y, { steps: 12 });
  await page.mouse.up();
}

async function proofIsWellFormed(page, what) {
  const proof = await page.evaluate(() => window.captchaObj.getValidate());
  expect(proof && FIELDS.every((f) => typeof proof[f] === "string" && proof[f].length > 0)
    && /^[0-9a-f]{32}$/.test(proof.lot_number) && /^\d{10}$/.test(proof.gen_time),
    `${what}: getValidate() yields the five fields`);
}

try {
  // float, in a Chinese browser, language not set: the widget follows the browser.
  {
    const page = await open("float.html", "zh-CN");
    const root = ".gt4-standin";
    expect(await page.getAttribute(root, "data-product") === "float", "float: the slider is inline in #captcha");
    expect(await page.getAttribute(root, "data-lang") === "zho", "float: no language set, a zh-CN browser gets zho");
    expect((await page.textContent(root)).includes("GeeTest simulator (offline)"), "float: the small print says it is the offline simulator");
    expect(JSON.stringify(await page.events()) === '["ready","nextReady"]', "float: onReady then onNextReady");
    const surface = await page.evaluate((methods) => {
      const c = window.captchaObj;
      const missing = methods.filter((m) => typeof c[m] !== "function");
      const unchained = methods.filter((m) => m.startsWith("on") && c[m](() => {}) !== c);
      return { missing, unchained, reset: c.reset() === c, show: c.showCaptcha() === c,
               before: c.getValidate() };
    }, METHODS);
    expect(surface.missing.length === 0, "every documented method exists: " + surface.missing.join(","));
    expect(surface.unchained.length === 0 && surface.reset && surface.show, "on*, reset and showCaptcha return the captcha");
    expect(surface.before === false, "getValidate() is false before success");
    await page.click("#btn");
    expect(await page.textContent("#message") === "请完成验证", "float: submitting unsolved asks to complete verification");
    await page.shot("float-1-ready");

    await drag(page, root, 0.4);
    await page.waitForSelector('.gt4-challenge[data-state="fail"]');
    expect((await page.textContent(".gt4-status")).includes("请再试一次"), "float: a short release shows try again");
    expect((await page.events()).includes("fail"), "float: a short release fires onFail");
    expect(await page.evaluate(() => window.captchaObj.getValidate()) === false, "float: still no proof after a short release");
    await page.shot("float-2-short-release");

    await drag(page, root, 1.05);
    await page.waitForSelector('.gt4-challenge[data-state="success"]');
    expect((await page.textContent(".gt4-status")).includes("✔ 验证成功"), "float: a full drag shows a tick and 验证成功");
    const colour = await page.$eval(".gt4-challenge", (e) => getComputedStyle(e).borderColor);
    expect(colour === "rgb(26, 127, 55)", "float: success is green, not only greyed out");
    expect((await page.events()).includes("success"), "float: onSuccess fired");
    await proofIsWellFormed(page, "float");
    await page.shot("float-3-success");

    await page.click("#btn");
    await page.waitForFunction(() => document.querySelector("#message").textContent === "登录成功");
    expect(validations.at(-1).result === "success", "float: the five fields validate against the simulator");
    await page.click("#btn");
    await page.waitForFunction(() => document.querySelector("#message").textContent.startsWith("登录失败"));
    expect(validations.at(-1).result === "fail", "float: the same proof again fails at the simulator");
    expect(await page.getAttribute(".gt4-challenge", "data-state") === "idle"
      && await page.evaluate(() => window.captchaObj.getValidate()) === false,
      "float: the page's reset() after the failed submit gives a fresh slider");

    await page.evaluate(() => window.captchaObj.destroy());
    expect(await page.locator(".gt4-standin").count() === 0, "float: destroy() removes the widget");
    await page.done();
  }

  // The default language in an English browser.
  {
    const page = await open("float.html", "en-US");
    expect(await page.getAttribute(".gt4-standin", "data-lang") === "eng", "float: no language set, an en-US browser gets eng");
    await page.done();
  }

  // float in English (language: "en", as GeeTest's English demo), by keyboard.
  {
    const page = await open("float-en.html", "zh-CN");
    expect(await page.getAttribute(".gt4-standin", "data-lang") === "eng", "en: language 'en' is accepted as eng");
    expect((await page.textContent(".gt4-prompt")).includes("Drag the slider"), "en: the prompt is English");
    const handle = page.locator(".gt4-handle");
    expect(await handle.getAttribute("role") === "slider" && (await handle.getAttribute("aria-label")).includes("press End"),
      "en: the handle is a labelled slider for screen readers");
    await drag(page, ".gt4-standin", 0.3);
    await page.waitForSelector('.gt4-challenge[data-state="fail"]');
    expect((await page.textContent(".gt4-status")).includes("Try again"), "en: a short release says Try again");
    await handle.focus();
    for (let i = 0; i < 3; i++) await page.keyboard.press("ArrowRight");
    expect(await handle.getAttribute("aria-valuenow") === "30", "en: three ArrowRight presses move to 30 without resetting");
    await page.keyboard.press("ArrowLeft");
    expect(await handle.getAttribute("aria-valuenow") === "20", "en: ArrowLeft moves back");
    await page.shot("en-1-keyboard");
    await page.keyboard.press("End");
    await page.waitForSelector('.gt4-challenge[data-state="success"]');
    expect((await page.textContent(".gt4-status")).includes("Verification succeeded"), "en: End completes it");
    await page.shot("en-2-success");
    await page.click("#btn");
    await page.waitForFunction(() => document.querySelector("#message").textContent === "Login success");
    expect(validations.at(-1).result === "success", "en: the five fields validate against the simulator");
    await page.done();
  }

  // popup: a button in the page opens a dialog.
  {
    const page = await open("popup.html", "zh-CN");
    expect(await page.locator(".gt4-standin .gt4-button").isVisible(), "popup: a button in #captcha");
    expect(await page.locator(".gt4-handle").count() === 0, "popup: no slider until the button is clicked");
    await page.click(".gt4-button");
    await page.waitForSelector('.gt4-modal[role="dialog"]');
    expect((await page.events()).join() === "ready,nextReady,boxShow", "popup: onNextReady then onBoxShow when it opens");
    await page.shot("popup-1-open");
    await page.click(".gt4-close");
    expect(await page.locator(".gt4-modal").count() === 0 && (await page.events()).includes("close"),
      "popup: the close button closes it and fires onClose");
    await page.click(".gt4-button");
    await drag(page, ".gt4-modal", 1.05);
    await page.waitForSelector(".gt4-modal", { state: "detached" });
    expect(await page.getAttribute(".gt4-standin", "data-state") === "success"
      && (await page.textContent(".gt4-button")).includes("✔验证成功"), "popup: the dialog closes and the button shows success");
    await proofIsWellFormed(page, "popup");
    await page.shot("popup-2-success");
    await page.click("#btn");
    await page.waitForFunction(() => document.querySelector("#message").textContent === "登录成功");
    expect(validations.at(-1).result === "success", "popup: the five fields validate against the simulator");
    await page.done();
  }

  // bind: nothing until the page's own button calls showBox().
  {
    const page = await open("bind.html", "zh-CN");
    expect(await page.locator(".gt4-standin, .gt4-modal").count() === 0, "bind: nothing is drawn before showBox()");
    await page.click("#btn");
    await page.waitForSelector(".gt4-modal");
    expect((await page.events()).includes("boxShow"), "bind: the page's button calls showBox() and the dialog opens");
    await page.shot("bind-1-open");
    await page.keyboard.press("ArrowRight");
    await page.keyboard.press("Enter");
    await page.waitForSelector('.gt4-modal .gt4-challenge[data-state="success"]');
    await page.shot("bind-2-success");
    await page.waitForFunction(() => document.querySelector("#message").textContent === "登录成功");
    expect(validations.at(-1).result === "success", "bind: Enter completes it and onSuccess's submit validates");
    await page.waitForSelector(".gt4-modal", { state: "detached" });
    await page.done();
  }
} finally {
  await browser.close();
  site.close();
}
