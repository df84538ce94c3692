// Shared by the journeys (admin, payouts, market, dashboards): signing in from the
// page with an injected wallet, the API as a page's cookie session sees it, paying a payment
// on the local chain, and polling a condition with a deadline (never a sleep as synchronisation).
import assert from 'node:assert/strict';
import { injectPayingEthereum } from './chain.mjs';
import { watchProblems } from './support.mjs';

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };
export const PASSWORD = 'analytical engine';
const POLL_MS = 100;

/** Polls `check` until it returns a truthy value; fails with `what` at the deadline. */
export async function until(what, check, timeoutMs = 20_000) {
	const deadline = Date.now() + timeoutMs;
	let last;
	while (Date.now() < deadline) {
		last = await check();
		if (last) return last;
		await new Promise((r) => setTimeout(r, POLL_MS));
	}
	assert.fail(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** The text a person reads: whitespace of the markup collapsed. */
export async function textOf(locator) {
	const text =
		(await locator
			.first()
			.textContent({ timeout: 5_000 })
			.catch(() => '')) ?? '';
	return text.replace(/\s+/g, ' ').trim();
}

export async function textMatches(locator, pattern, timeoutMs = 20_000) {
	let text = '';
	await until(
		`${pattern} in the page`,
		async () => {
			text = await textOf(locator);
			return pattern.test(text) ? text : null;
		},
		timeoutMs
	).catch(() => assert.fail(`expected ${pattern} in ${JSON.stringify(text)}`));
	return text;
}

/** The API as the page's cookie session sees it (same origin, the CSRF header the app sends). */
export async function apiFromPage(page, path, init = {}) {
	return page.evaluate(
		async ([path, init]) => {
			const response = await fetch(path, {
				...init,
				headers: {
					'x-aiforge-csrf': '1',
					'content-type': 'application/json',
					'idempotency-key': crypto.randomUUID(),
					...init.headers
				}
			});
			const text = await response.text();
			let body = null;
			try {
				body = JSON.parse(text);
			} catch {
				body = text;
			}
			return { status: response.status, body };
		},
		[path, init]
	);
}

/** A browser context whose MetaMask holds `wallet`, signed in with it on the page. */
export async function signedInWithWallet(browser, server, chain, wallet, viewport = DESKTOP) {
	const context = await browser.newContext({ viewport });
	const metamask = await injectPayingEthereum(context, chain, wallet);
	const page = await context.newPage();
	const problems = watchProblems(page);
	await signInAgain(page, server);
	return { context, page, problems, wallet, metamask };
}

/** Signs the page in again with its wallet (sessions last a day on the app's clock). */
export async function signInAgain(page, server) {
	await page.goto(server.url('/signin'));
	await page.getByRole('button', { name: 'Sign in with MetaMask' }).click();
	await page.waitForURL(server.url('/account'));
}

/** An email account made on the register page. */
export async function registeredPage(browser, server, name, viewport = DESKTOP) {
	const context = await browser.newContext({ viewport });
	const page = await context.newPage();
	const problems = watchProblems(page);
	await page.goto(server.url('/register'));
	await page.getByLabel('Email').fill(`${name}@example.com`);
	await page.getByLabel('Username').fill(name);
	await page.getByLabel('Password').fill(PASSWORD);
	await page.getByRole('button', { name: 'Create account' }).click();
	await page.waitForURL(server.url('/plans'));
	return { context, page, problems };
}

/**
 * Pays `paymentId` (its `amount` in base units) from the payer's key on the chain and verifies
 * it from the payer's page, mining blocks until the server confirms it.
 */
export async function payOnChain(chain, page, paymentId, baseUnits) {
	const hash = await chain.transfer(chain.payer_key, chain.platform, baseUnits);
	return until(
		`payment ${paymentId} confirmed`,
		async () => {
			const answer = await apiFromPage(page, '/api/payments/verify', {
				method: 'POST',
				body: JSON.stringify({ payment_id: paymentId, tx_hash: hash })
			});
			if (answer.status === 200) return answer.body.payment;
			assert.equal(answer.status, 202, JSON.stringify(answer.body));
			await chain.mine(1);
			return null;
		},
		30_000
	);
}

/** Moves the server's manual clock forward (the test-only route). */
export async function advanceClock(server, seconds) {
	const response = await fetch(server.url('/api/ops/clock/advance'), {
		method: 'POST',
		headers: { 'content-type': 'application/json' },
		body: JSON.stringify({ seconds })
	});
	const text = await response.text();
	assert.equal(response.status, 200, text);
	return JSON.parse(text);
}
