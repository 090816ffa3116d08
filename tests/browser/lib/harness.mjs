// Launching Chromium for the tests, and what every test needs around a page: the server's
// address, screenshots, accessibility checks with axe-core, and watching for script errors and
// Content-Security-Policy violations.

import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startPacer } from './pacer.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = join(here, '..', 'artifacts');
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

if (!process.env.CONCH_URL) throw new Error('CONCH_URL is not set: run the tests through tests/browser/run.sh');
/** Where the browser goes: the server, behind a proxy that paces its event streams. */
export const BASE_URL = await startPacer(process.env.CONCH_URL, 150);

const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/**
 * A browser with its own fresh profile (so its own cookies): Playwright passes the profile
 * directory as --user-data-dir. `close()` ends it and deletes the profile.
 */
export async function openBrowser(viewport = { width: 1280, height: 900 }) {
  const profile = mkdtempSync(join(tmpdir(), 'conch-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_FLAGS,
    headless: true,
    viewport,
    acceptDownloads: true,
    baseURL: BASE_URL,
  });
  context.setDefaultTimeout(20000);
  const page = context.pages()[0] || await context.newPage();
  const problems = watch(page);
  return {
    context,
    page,
    problems,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Collects uncaught script errors and CSP violations reported on `page`. */
function watch(page) {
  const problems = [];
  page.on('pageerror', (error) => problems.push(`script error: ${error.message}`));
  page.on('console', (message) => {
    const text = message.text();
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(text)) {
      problems.push(`CSP: ${text}`);
    }
  });
  return problems;
}

/** Saves a full-page screenshot as artifacts/<name>.png. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * Runs axe-core (WCAG 2.0/2.1 A and AA rules and best practices) on the page as it is and
 * returns the serious and critical violations, each summarized with the elements it found.
 */
export async function seriousViolations(page) {
  // DevTools evaluation is not subject to the page's CSP, so the app's policy stays strict.
  if (!await page.evaluate('typeof window.axe === "object"')) await page.evaluate(AXE_SOURCE);
  const results = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
  }));
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id}: ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).slice(0, 5).join(', ')}`);
}

/**
 * Presses `key` (Tab by default) until `isTarget(arg)`, run in the page, holds for the focused
 * element; fails after `limit` presses, saying where focus ended up.
 */
export async function tabTo(page, description, isTarget, arg = null, { limit = 60, key = 'Tab' } = {}) {
  for (let i = 0; i < limit; i += 1) {
    await page.keyboard.press(key);
    if (await page.evaluate(isTarget, arg)) return;
  }
  const at = await page.evaluate(() => document.activeElement?.outerHTML.slice(0, 200));
  throw new Error(`${limit} presses of ${key} never reached ${description}; focus is on ${at}`);
}

/** Focus is on an element whose accessible name (aria-label or text) is `name`. */
export function focusedNamed(name) {
  const element = document.activeElement;
  if (!element) return false;
  const label = element.getAttribute('aria-label') || element.textContent || '';
  return label.trim() === name || (element.labels && [...element.labels].some((l) => l.textContent.trim() === name));
}

/** A JSON GET of the app's API from inside the page (with its session cookie). */
export function api(page, path) {
  return page.evaluate(async (url) => {
    const response = await fetch(url, { headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
    return response.json();
  }, path);
}

/** Waits until no reply is streaming and at least `count` replies are on screen. */
export async function waitForReplies(page, count) {
  try {
    await page.waitForFunction((n) => document.querySelector('.composer .stop')?.hidden === true
      && document.querySelectorAll('.message.assistant').length >= n, count, { timeout: 60000 });
  } catch (error) {
    await screenshot(page, `failed-wait-for-${count}-replies`);
    throw error;
  }
}

