// Drives headless Chromium through the demo, as a person would:
// node demo.mjs BASE_URL OUT_DIR
// Exits non-zero with a message on the first failed expectation.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function expect(cond, what) {
  if (!cond) {
    console.error("FAILED: " + what);
    process.exit(1);
  }
  console.log("ok - " + what);
}

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 900, height: 760 } });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(page.url() + ": " + m.text()); });
  page.on("pageerror", (e) => errors.push(page.url() + ": " + String(e)));
  const shot = async (name) => {
    // Every page fits the 900 px window: nothing scrolls sideways.
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    expect(wide <= 900, `${name}: the page fits a 900 px window (${wide} px)`);
    await page.screenshot({ path: join(out, name + ".png"), fullPage: true });
  };

  // 1. The login page over HTTPS, with the widget.
  await page.goto(base + "/login");
  await page.waitForSelector(".gt4-handle");
  await shot("1-login");
  expect(await page.title() === "Log in", "the login page loads over HTTPS");

  // 2. Solve the widget: drag the slider all the way with the mouse.
  const handle = await page.locator(".gt4-handle").boundingBox();
  const track = await page.locator(".gt4-track").boundingBox();
  await page.mouse.move(handle.x + handle.width / 2, handle.y + handle.height / 2);
  await page.mouse.down();
  await page.mouse.move(track.x + track.width + 10, handle.y + handle.height / 2, { steps: 10 });
  await page.mouse.up();
  await page.waitForSelector('.gt4-standin[data-state="success"]');
  const proof = await page.evaluate(() =>
    Object.fromEntries(["lot_number", "captcha_output", "pass_token", "gen_time", "captcha_id"]
      .map((n) => [n, document.querySelector(`#form input[name="${n}"]`).value])));
  await shot("2-solved");
  expect(/^[0-9a-f]{32}$/.test(proof.lot_number), "the widget yields a lot_number");

  // 3. Submit: the legacy app receives the user's fields and no captcha field.
  await Promise.all([page.waitForNavigation(), page.click("#submit")]);
  await shot("3-received");
  const received = await page.textContent("#body");
  const verdict = await page.textContent("#verdict");
  expect(received.includes("user=alice") && received.includes("password=correct+horse"), "the app received the user's fields: " + received);
  expect(!/lot_number|captcha_output|pass_token|gen_time|captcha_id/.test(received), "the app received no captcha field");
  expect(verdict.includes("No captcha field reached the app."), "the page says no captcha field reached the app");

  expect(errors.length === 0, "no console errors on the demo's pages: " + errors.join(" | "));

  // 4. The same proof again: refused as a replay. (Chromium logs each 403
  // document as a failed resource: that is the refusal, not a page error.)
  await page.goto(base + "/login");
  await page.evaluate((p) => {
    for (const [n, v] of Object.entries(p)) document.querySelector(`#form input[name="${n}"]`).value = v;
  }, proof);
  await Promise.all([page.waitForNavigation(), page.click("#submit")]);
  await shot("4-replayed");
  expect((await page.content()).includes("captcha_replayed"), "a replayed proof shows the replay refusal");

  // 5. Submit without solving: refused.
  await page.goto(base + "/login");
  await Promise.all([page.waitForNavigation(), page.click("#submit")]);
  await shot("5-unsolved");
  expect((await page.content()).includes("captcha_required"), "an unsolved captcha shows the refusal page");

  const pageErrors = errors.filter((e) => !/Failed to load resource: .* status of 403/.test(e));
  expect(pageErrors.length === 0, "no console errors on the refusal pages: " + pageErrors.join(" | "));
} finally {
  await browser.close();
}
