// Drives headless Chromium through the demo as a person would, both ways an
// unmodified app is protected (issue 18):
//   node demo.mjs DEMO_URL SHORT_TTL_URL OUT_DIR
// DEMO_URL is `gatekeeper demo`'s HTTPS address; SHORT_TTL_URL a second
// gatekeeper in front of the same legacy app with `challenge.ttl = "1s"`.
// The legacy app has no GeeTest code: /login gets the widget injected by
// gatekeeper, /comment is kept behind gatekeeper's challenge page.
// Exits non-zero with a message on the first failed expectation.
import { chromium } from "playwright-core";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, shortBase, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const FIELDS = ["lot_number", "captcha_output", "pass_token", "gen_time", "captcha_id"];

function expect(cond, what) {
  if (!cond) {
    console.error("FAILED: " + what);
    process.exit(1);
  }
  console.log("ok - " + what);
}

// Every byte value, then random bytes: a file that survives only if kept
// byte for byte.
const attachment = Buffer.concat([Buffer.from([...Array(256).keys()]), randomBytes(200 * 1024)]);
const attachmentSha = createHash("sha256").update(attachment).digest("hex");

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function person(name) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 900, height: 760 } });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(page.url() + ": " + m.text()); });
  page.on("pageerror", (e) => errors.push(page.url() + ": " + String(e)));
  const shot = async (shotName) => {
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    expect(wide <= 900, `${shotName}: the page fits a 900 px window (${wide} px)`);
    await page.screenshot({ path: join(out, shotName + ".png"), fullPage: true });
  };
  // Chromium logs each 403/410 document as a failed resource: that is the
  // challenge or the refusal itself, not a page error.
  const pageErrors = () => errors.filter((e) => !/Failed to load resource: .* status of 4\d\d/.test(e));
  return { name, context, page, shot, pageErrors };
}

// Drags the stand-in widget's slider to the end, as a mouse does.
async function solve(page) {
  await page.waitForSelector(".gt4-handle");
  const handle = await page.locator(".gt4-handle").boundingBox();
  const track = await page.locator(".gt4-track").boundingBox();
  await page.mouse.move(handle.x + handle.width / 2, handle.y + handle.height / 2);
  await page.mouse.down();
  await page.mouse.move(track.x + track.width + 10, handle.y + handle.height / 2, { steps: 10 });
  await page.mouse.up();
}

try {
  const a = await person("a");
  const { page } = a;
  // Counts the app's posts from its own start page, in a browser of its own
  // (the person's history, with its no-store pages, is left alone).
  const observer = await person("observer");
  const postsReceived = async (_page, origin) => {
    await observer.page.goto(origin + "/");
    return Number(await observer.page.textContent("#posts"));
  };

  // --- A. Injection: the app's own login form gets the widget.
  const loginResponse = await page.goto(base + "/login");
  const csp = loginResponse.headers()["content-security-policy"] || "";
  expect(/script-src 'self' http:\/\/127\.0\.0\.1:\d+/.test(csp) && csp.includes("default-src 'self'"),
    "the app's strict CSP is kept and amended with the widget's origin: " + csp);
  await page.waitForSelector(".gt4-handle");
  expect(await page.locator("#form .gatekeeper-captcha + .gatekeeper-status + #submit").count() === 1,
    "the widget sits in the app's form, before its submit button");
  await page.fill('input[name="password"]', "correct horse battery");
  await page.click("#submit");
  await page.waitForSelector(".gatekeeper-status:has-text('Please complete the check')");
  expect(page.url() === base + "/login", "submitting before solving keeps the person on the page");
  await a.shot("inject-1-login");
  const before = await postsReceived(page, base);
  await page.goto(base + "/login");
  await page.fill('input[name="password"]', "correct horse battery");
  await solve(page);
  await page.waitForSelector('.gt4-standin[data-state="success"]');
  const proof = await page.evaluate((fields) => Object.fromEntries(fields.map((n) =>
    [n, document.querySelector(`#form input[name="${n}"]`).value])), FIELDS);
  expect(/^[0-9a-f]{32}$/.test(proof.lot_number), "the solved widget filled the injected fields");
  await a.shot("inject-2-solved");
  await Promise.all([page.waitForNavigation(), page.click("#submit")]);
  await a.shot("inject-3-received");
  expect((await page.textContent("#body")) === "user=alice&password=correct+horse+battery",
    "the app received exactly the fields the person typed, and no captcha field");
  expect((await page.textContent("#verdict")).includes("No captcha field reached the app."), "the app says so too");
  expect(await postsReceived(page, base) === before + 1, "the app received the login once");
  expect(a.pageErrors().length === 0, "no console errors (no CSP violation) on the injected pages: " + a.pageErrors().join(" | "));

  // The same proof again (the form posted by script, past the widget's hold).
  await page.goto(base + "/login");
  await Promise.all([page.waitForNavigation(), page.evaluate((p) => {
    for (const [n, v] of Object.entries(p)) document.querySelector(`#form input[name="${n}"]`).value = v;
    HTMLFormElement.prototype.submit.call(document.getElementById("form"));
  }, proof)]);
  await a.shot("inject-4-replayed");
  expect((await page.content()).includes("captcha_replayed"), "a replayed proof is refused as a replay");
  expect(await postsReceived(page, base) === before + 1, "the replay reached nothing");

  // --- B. Challenge: a multipart post with a file is kept, then released.
  await page.goto(base + "/comment");
  await page.fill("textarea", "Crème brûlée, twice.");
  await page.setInputFiles('input[name="attachment"]',
    { name: "every-byte.bin", mimeType: "application/octet-stream", buffer: attachment });
  await Promise.all([page.waitForNavigation(), page.click("#submit")]);
  await page.waitForSelector(".gt4-handle");
  expect(await page.title() === "Please confirm you are a person", "the post gets gatekeeper's challenge page");
  await a.shot("challenge-1-page");
  expect(await postsReceived(page, base) === before + 1, "nothing reached the app while the post is kept");
  const keptId = await page.inputValue('#gatekeeper-release input[name="challenge"]');

  // A wrong proof (the spent one) first: the same page says try again.
  await Promise.all([page.waitForNavigation(), page.evaluate((p) => {
    const form = document.getElementById("gatekeeper-release");
    // As challenge.js does: the page carries only the id's field.
    for (const [n, v] of Object.entries(p)) {
      const input = form.appendChild(document.createElement("input"));
      Object.assign(input, { type: "hidden", name: n, value: v });
    }
    form.submit();
  }, proof)]);
  await page.waitForSelector(".gt4-handle");
  expect((await page.textContent("body")).includes("did not pass"), "a wrong proof: try again, the request still waits");
  await a.shot("challenge-2-retry");

  // Then the right one: the post goes on as first sent.
  await Promise.all([page.waitForNavigation({ url: /\/\.gatekeeper\/release$/ }), solve(page)]);
  await page.waitForSelector("#verdict");
  await a.shot("challenge-3-received");
  const body = await page.textContent("#body");
  expect(body.includes("comment=Crème brûlée, twice."), "the app received the comment: " + body);
  expect(body.includes(`attachment: file every-byte.bin, ${attachment.length} bytes, sha256 ${attachmentSha}`),
    "the app received the file byte for byte");
  expect(!/lot_number|captcha_output|pass_token|gen_time|captcha_id/.test(body), "and no captcha field");
  expect(await postsReceived(page, base) === before + 2, "the kept post reached the app once");

  // The release again (same id, a proof): gone, nothing forwarded twice.
  const again = await page.evaluate(async ({ keptId, proof }) => {
    const r = await fetch("/.gatekeeper/release", { method: "POST", body: new URLSearchParams({ challenge: keptId, ...proof }) });
    return r.status;
  }, { keptId, proof });
  expect(again === 403 || again === 410, "a kept post is released once only (" + again + ")");
  expect(await postsReceived(page, base) === before + 2, "the second release reached nothing");

  // --- C. Someone else's id: a second browser gets nothing.
  await page.goto(base + "/comment");
  await Promise.all([page.waitForNavigation(), page.click("#submit")]);
  await page.waitForSelector(".gt4-handle");
  const id = await page.inputValue('#gatekeeper-release input[name="challenge"]');
  const widgetSrc = await page.getAttribute('script[src$="gt4.js"]', "src");
  const sim = new URL(widgetSrc).origin;
  const minted = await (await fetch(`${sim}/_sim/mint?captcha_id=${proof.captcha_id}`, { method: "POST" })).json();
  const b = await person("b");
  await b.page.goto(base + "/");
  const stolen = await b.page.evaluate(async ({ id, minted }) => {
    const form = new URLSearchParams({ challenge: id, ...minted });
    const r = await fetch("/.gatekeeper/release", { method: "POST", body: form });
    return { status: r.status, text: await r.text() };
  }, { id, minted });
  expect(stolen.status === 403 && !stolen.text.includes("verdict"), "another browser holding the id gets nothing");
  expect(await postsReceived(b.page, base) === before + 2, "the stolen id released nothing");
  await Promise.all([page.waitForNavigation({ url: /\/\.gatekeeper\/release$/ }), solve(page)]);
  await page.waitForSelector("#verdict");
  expect(await postsReceived(b.page, base) === before + 3, "its owner still releases it, once");

  // --- D. An expired kept request (challenge.ttl = 1s on this instance).
  await page.goto(shortBase + "/comment");
  await Promise.all([page.waitForNavigation(), page.click("#submit")]);
  await page.waitForSelector(".gt4-handle");
  await page.waitForTimeout(2500); // the behaviour under test: the TTL passes
  await Promise.all([page.waitForNavigation({ url: /\/\.gatekeeper\/release$/ }), solve(page)]);
  expect((await page.textContent("body")).includes("expired"), "an expired kept request gets a page that says so");
  await a.shot("challenge-4-expired");
  const back = await page.getAttribute("a", "href");
  expect(back === "/comment", "with a link back to where the person came from: " + back);
  expect(await postsReceived(page, shortBase) === before + 3, "the expired post reached nothing");

  // --- E. Scripts are not people: the API page's JSON gets the 403 JSON.
  await page.goto(base + "/api");
  await page.click("#submit");
  await page.waitForFunction(() => document.getElementById("answer").textContent.length > 0);
  const answer = await page.textContent("#answer");
  expect(answer.startsWith("403 ") && answer.includes("captcha_required"), "a script gets the 403 JSON: " + answer);
  await a.shot("api-1-refused");

  expect(a.pageErrors().length === 0, "no console errors: " + a.pageErrors().join(" | "));
} finally {
  await browser.close();
}
