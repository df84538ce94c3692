// The admin's fee schedule page through the real `aiforge` binary in headless Chromium: an admin
// signs in with a whitelisted wallet (a real ethers.js key behind an injected provider), sees
// version 1 in force, is told at the field that a back-dated proposal is refused, proposes 40%
// on platform subscriptions for a future date, adopts it, and the public schedule names it as
// the next version; screenshots at desktop and phone width.
//   cd web && npm run test:e2e   (after `npm run build` and `cargo build --bin aiforge`)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
	artifactPath,
	injectEthereum,
	launchBrowser,
	skipReason,
	startServer,
	Wallet,
	watchProblems
} from './support.mjs';

const skip = skipReason();
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

/** Polls a locator's text until it matches (the page answers after its API calls). */
async function textMatches(locator, pattern, timeoutMs = 10_000) {
	const deadline = Date.now() + timeoutMs;
	let text = '';
	while (Date.now() < deadline) {
		text = (await locator.textContent({ timeout: timeoutMs }).catch(() => '')) ?? '';
		if (pattern.test(text)) return text;
		await new Promise((r) => setTimeout(r, 100));
	}
	assert.fail(`expected ${pattern} in ${JSON.stringify(text)}`);
}

describe('the fee schedule page in Chromium', { skip: skip ?? false }, () => {
	const admin = Wallet.createRandom();
	let server;
	let browser;

	before(async () => {
		server = await startServer({
			env: {
				AIFORGE_ADMIN_WALLETS: admin.address,
				AIFORGE_MANUAL_CLOCK_START: '2026-11-20T12:00:00Z'
			}
		});
		browser = await launchBrowser();
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
	});

	test('an admin proposes a version, is refused a back-dated one at the field, and adopts', async () => {
		const context = await browser.newContext({ viewport: DESKTOP });
		await injectEthereum(context, admin);
		const page = await context.newPage();
		const problems = watchProblems(page);
		await page.goto(server.url('/signin'));
		await page.getByRole('button', { name: 'Sign in with MetaMask' }).click();
		await page.waitForURL(server.url('/account'));
		await page.goto(server.url('/admin/fees'));
		const versions = page.getByTestId('fee-version');
		await textMatches(
			versions.first(),
			/^\s*1\s*2026-01-01.*in force\s*30%\s*10%\s*5%\s*5%\s*100%\s*100%\s*\$5/
		);

		// Back-dated: the server's refusal, shown at the date field; nothing proposed.
		await page.getByLabel('Effective from (UTC; must lie in the future)').fill('2026-11-01T00:00');
		await page.getByLabel(/Platform subscriptions: platform %/).fill('40');
		await page.getByRole('button', { name: 'Propose' }).click();
		await textMatches(page.getByRole('alert'), /effective_from must lie in the future/);
		assert.equal(await page.getByTestId('fee-proposal').count(), 0);

		await page.getByLabel('Effective from (UTC; must lie in the future)').fill('2026-12-01T00:00');
		// Version 1 pays no node for inference; this proposal does, per 1,000 tokens served.
		const compute = page.getByLabel(/Compute rate, USDT per 1,000 tokens/);
		await textMatches(page.locator('label', { has: compute }), /now none/);
		await compute.fill('0.002');
		await page.getByRole('button', { name: 'Propose' }).click();
		const proposal = page.getByTestId('fee-proposal');
		await textMatches(proposal, /Platform subscriptions 40%[\s\S]*compute \$0\.002[\s\S]*proposed/);
		assert.equal(await compute.inputValue(), '', 'the form is cleared once proposed');
		await page.screenshot({ path: artifactPath('desktop-admin-fees.png'), fullPage: true });

		// No month is closed yet: the what-if says so instead of inventing figures.
		await proposal.getByRole('button', { name: 'What if' }).click();
		await textMatches(page.getByRole('alert'), /no month is closed yet/);

		await proposal.getByRole('button', { name: 'Adopt' }).click();
		await textMatches(page.getByTestId('fee-proposal-state'), /adopted \(version 2\)/);
		await textMatches(versions.nth(1), /^\s*2\s*2026-12-01T00:00:00\.000000Z\s*adopted\s*40%/);
		const current = await (await fetch(server.url('/api/fees/current'))).json();
		assert.equal(current.current.version, 1);
		assert.equal(current.next.version, 2);
		assert.equal(current.next.platform_percent.platform_subscription, 40);
		assert.equal(current.next.compute_per_1k_tokens, '0.002000');
		assert.equal(
			(await versions.nth(1).locator('[data-key="compute_per_1k_tokens"]').textContent())?.trim(),
			`$${current.next.compute_per_1k_tokens.replace(/0+$/, '')}`
		);
		assert.equal(
			(await versions.first().locator('[data-key="compute_per_1k_tokens"]').textContent())?.trim(),
			'none'
		);

		await page.setViewportSize(PHONE);
		await page.screenshot({ path: artifactPath('phone-admin-fees.png'), fullPage: true });
		assert.deepEqual(problems, []);
		await context.close();
	});
});
