// Browser journeys that pay from the page (issue 16) through the real `aiforge` binary in
// headless Chromium, on a real local chain: ganache with a real ERC-20 "USDT"
// (fixtures/chain), a MetaMask-shaped provider in the page whose transactions a real ethers.js
// wallet signs and sends, and blocks mined from the test to reach the confirmations.
//   cd web && npm run test:e2e   (after `npm run build`, `cargo build --bins`,
//   `npm ci --prefix fixtures/chain`)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { chainSkipReason, injectPayingEthereum, startChain, usdt } from './chain.mjs';
import { artifactPath, launchBrowser, skipReason, startServer, watchProblems } from './support.mjs';

const skip = skipReason() ?? chainSkipReason();
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

/** Polls `check` until it returns a truthy value; fails with `what` at the deadline. */
async function until(what, check, timeoutMs = 15_000) {
	const deadline = Date.now() + timeoutMs;
	let last;
	while (Date.now() < deadline) {
		last = await check();
		if (last) return last;
		await new Promise((r) => setTimeout(r, 100));
	}
	assert.fail(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function textOf(locator) {
	return (
		(await locator
			.first()
			.textContent({ timeout: 5_000 })
			.catch(() => '')) ?? ''
	).trim();
}

async function textMatches(locator, pattern, timeoutMs = 15_000) {
	return until(
		`${pattern}`,
		async () => pattern.test(await textOf(locator)) && (await textOf(locator)),
		timeoutMs
	);
}

/** The API as the page's cookie session sees it. */
async function apiFromPage(page, path, init = {}) {
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

describe('paying from the wallet in the page', { skip: skip ?? false }, () => {
	let chain;
	let server;
	let browser;

	before(async () => {
		chain = await startChain();
		server = await startServer({ env: chain.serverEnv() });
		browser = await launchBrowser();
		// A second person with USDT of their own: 100 from the funded payer.
		await chain.transfer(chain.payer_key, chain.other, usdt('100'));
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
		await chain?.stop();
	});

	/** A browser whose MetaMask holds `key`, signed in with it (the wallet is then the user's). */
	async function signedInWithWallet(key, viewport = DESKTOP) {
		const context = await browser.newContext({ viewport });
		const wallet = chain.wallet(key);
		const metamask = await injectPayingEthereum(context, chain, wallet);
		const page = await context.newPage();
		const problems = watchProblems(page);
		await page.goto(server.url('/signin'));
		await page.getByRole('button', { name: 'Sign in with MetaMask' }).click();
		await page.waitForURL(server.url('/account'));
		return { context, page, problems, wallet, metamask };
	}

	test('a consumer buys the Basic plan paying from the page and watches 1/3, 2/3, 3/3', async () => {
		const { context, page, problems, metamask } = await signedInWithWallet(chain.payer_key);
		const platformBefore = await chain.balance(chain.platform);
		await page.goto(server.url('/plans'));
		await textMatches(page.getByTestId('subscription-status'), /no plan yet/);
		await page.getByRole('button', { name: 'Buy Basic for $10' }).click();
		const payment = page.getByTestId('payment');
		await textMatches(payment.getByTestId('payment-amount'), /^10 USDT$/);
		assert.equal(await textOf(payment.getByTestId('payment-pay-to')), chain.platform);

		await payment.getByRole('button', { name: 'Pay 10 USDT from my wallet' }).click();
		// The transfer is in a block at once: one confirmation of three.
		await textMatches(payment.getByTestId('payment-confirmations'), /^1\/3$/);
		await page.screenshot({ path: artifactPath('desktop-plans-paying.png'), fullPage: true });
		await chain.mine(1);
		await textMatches(payment.getByTestId('payment-confirmations'), /^2\/3$/);
		await chain.mine(1);
		await textMatches(payment.getByTestId('payment-status'), /Payment confirmed \(3\/3/);
		await textMatches(page.getByTestId('subscription-status'), /You are on the Basic plan/);

		// The page asked for exactly the ERC-20 transfer of 10 USDT to the platform wallet.
		assert.equal(metamask.sent.length, 1);
		assert.equal(metamask.sent[0].to.toLowerCase(), chain.token.toLowerCase());
		assert.equal((await chain.balance(chain.platform)) - platformBefore, usdt('10'));
		const { body } = await apiFromPage(page, '/api/payments/history/all');
		const paid = body.payments.find((p) => p.payment_type === 'platform_subscription');
		assert.equal(paid.status, 'confirmed');
		assert.equal(paid.tx_hash, metamask.sent[0].hash);
		assert.deepEqual(problems, []);
		await context.close();
	});

	test("each refusal of a payment shows its sentence: underpaid, someone else's transaction", async () => {
		const { context, page, problems, metamask } = await signedInWithWallet(chain.other_key, PHONE);
		await page.goto(server.url('/plans'));
		await page.getByRole('button', { name: 'Buy Pro for $30' }).click();
		const payment = page.getByTestId('payment');
		await payment.getByTestId('payment-amount').waitFor();

		async function paste(hash) {
			const details = payment.locator('details');
			if (!(await details.evaluate((d) => d.open))) {
				await payment.getByText('Paid from another wallet app?').click();
			}
			await payment.getByLabel('Transaction hash').fill(hash);
			await payment.getByRole('button', { name: 'Check this transaction' }).click();
		}

		// 29 USDT from the user's own wallet for a 30 USDT payment.
		const short = await chain.transfer(chain.other_key, chain.platform, usdt('29'));
		await chain.mine(3);
		await paste(short);
		await textMatches(
			payment.getByTestId('payment-problem'),
			/sent less USDT than the payment asks/
		);

		// 30 USDT, but from another person's wallet.
		const theirs = await chain.transfer(chain.payer_key, chain.platform, usdt('30'));
		await chain.mine(3);
		await paste(theirs);
		await textMatches(payment.getByTestId('payment-problem'), /from a wallet that is not yours/);
		await page.screenshot({
			path: artifactPath('phone-plans-payment-refused.png'),
			fullPage: true
		});

		// A refusal changes nothing: the same payment is then paid from the page.
		await payment.getByRole('button', { name: 'Pay 30 USDT from my wallet' }).click();
		await textMatches(payment.getByTestId('payment-confirmations'), /^1\/3$/);
		await chain.mine(2);
		await textMatches(payment.getByTestId('payment-status'), /Payment confirmed/);
		await textMatches(page.getByTestId('subscription-status'), /You are on the Pro plan/);
		assert.equal(metamask.sent.length, 1);
		assert.deepEqual(problems, []);
		await context.close();
	});
});
