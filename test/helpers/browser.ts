/** Chromium for the browser tests (playwright-core over Debian's chromium) and signing in as a person would. */
import { existsSync } from 'node:fs';
import { type Browser, chromium, type Page } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Headless Chromium with the flags every browser test uses; fails plainly when Chromium is missing. */
export async function launchChromium(extraArgs: readonly string[] = []): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      ...extraArgs,
    ],
  });
}

/**
 * Opens the web application at `appUrl` and signs `user` in through the issuer's login form (the realm's demo
 * password), as a person would; resolves when `ready` (a selector of the signed-in page) is shown.
 */
export async function signInThroughIssuer(
  page: Page,
  appUrl: string,
  issuerUrl: string,
  user: string,
  ready = '#projects',
): Promise<void> {
  await page.goto(`${appUrl}/`);
  await page.click('#sign-in');
  await page.waitForURL((u) => u.href.startsWith(issuerUrl));
  await page.fill('#username', user);
  await page.fill('#password', `${user}-demo`);
  await page.click('#kc-login');
  await page.waitForSelector(ready);
}
