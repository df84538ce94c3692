// Browser journeys through the real `aiforge` binary in headless Chromium: email sign-up and a
// session that survives a reload, wallet sign-in with MetaMask- and TronLink-shaped providers
// signing with real keys, the plain-message fallback, verifying more wallets, the plans page,
// CSRF refusals, and screenshots of every page at desktop and phone width.
//   cd web && npm run test:e2e        (after `npm run build` and `cargo build --bin aiforge`)
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import {
	artifactPath,
	artifacts,
	injectEthereum,
	injectTronLink,
	launchBrowser,
	sessionCookie,
	skipReason,
	startServer,
	tronWallet,
	Wallet,
	watchProblems
} from './support.mjs';

const skip = skipReason();
const PASSWORD = 'analytical engine';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const PAGES = [
	'/',
	'/signin',
	'/register',
	'/account',
	'/plans',
	'/chat',
	'/marketplace',
	'/subscriptions',
	'/studio',
	'/studio/groups',
	'/dashboard'
];

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

describe('the web app in Chromium', { skip: skip ?? false }, () => {
	let server;
	let browser;

	before(async () => {
		server = await startServer();
		browser = await launchBrowser();
		process.stderr.write(`screenshots: ${artifacts}\n`);
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
	});

	async function registerInPage(page, name) {
		await page.goto(server.url('/register'));
		await page.getByLabel('Email').fill(`${name}@example.com`);
		await page.getByLabel('Username').fill(name);
		await page.getByLabel('Password').fill(PASSWORD);
		await page.getByRole('button', { name: 'Create account' }).click();
		await page.waitForURL(server.url('/plans'));
	}

	test('email sign-up opens a cookie session that a reload keeps and sign-out ends', async () => {
		const context = await browser.newContext({ viewport: DESKTOP });
		const page = await context.newPage();
		const problems = watchProblems(page);
		await registerInPage(page, 'ada');
		await page.getByRole('link', { name: 'Account: ada' }).waitFor();

		const cookie = await sessionCookie(context, server.base);
		assert.ok(cookie, 'the session is a cookie');
		assert.equal(cookie.httpOnly, true);
		assert.equal(cookie.sameSite, 'Strict');
		assert.equal(cookie.path, '/');
		assert.equal(cookie.secure, false, 'plain http public URL: not Secure');
		assert.equal(
			(await page.evaluate(() => document.cookie)).includes('aiforge_session'),
			false,
			'page script cannot read the session'
		);

		// The plans page: the server's prices as strings, then the Free plan.
		const { plans } = await (await fetch(server.url('/api/subscriptions/plans'))).json();
		assert.deepEqual(
			plans.map((p) => [p.name, p.price_per_month]),
			[
				['Free', '0.000000'],
				['Basic', '10.000000'],
				['Pro', '30.000000'],
				['Enterprise', '100.000000']
			]
		);
		// Shown as the server's text without its trailing zeros, never re-computed.
		const shown = { free: '$0', basic: '$10', pro: '$30', enterprise: '$100' };
		for (const plan of plans) {
			assert.equal(await page.getByTestId(`price-${plan.id}`).textContent(), shown[plan.id]);
		}
		await textMatches(page.getByTestId('subscription-status'), /no plan yet/);
		await page.getByRole('button', { name: 'Start the Free plan' }).click();
		await textMatches(page.getByTestId('subscription-status'), /You are on the Free plan/);
		await page.getByTestId('current-plan').waitFor();

		await page.reload();
		await page.getByRole('link', { name: 'Account: ada' }).waitFor();
		await textMatches(page.getByTestId('subscription-status'), /You are on the Free plan/);

		await page.getByRole('link', { name: 'Account: ada' }).click();
		await textMatches(page.getByTestId('account-username'), /^ada$/);
		await page.getByRole('button', { name: 'Sign out' }).click();
		await page.waitForURL(server.url('/'));
		await page.getByRole('link', { name: 'Sign in' }).first().waitFor();
		assert.equal(
			await sessionCookie(context, server.base),
			undefined,
			'sign-out clears the cookie'
		);
		await page.reload();
		await page.getByRole('link', { name: 'Create an account' }).waitFor();
		await page.goto(server.url('/account'));
		await page.waitForURL(/\/signin\?next=/);
		assert.deepEqual(problems, []);
		await context.close();
	});

	test('MetaMask sign-in signs the server message with a real key; TronLink verifies a second wallet', async () => {
		const eth = Wallet.createRandom();
		const tron = tronWallet();
		const context = await browser.newContext({ viewport: DESKTOP });
		await injectEthereum(context, eth);
		await injectTronLink(context, tron);
		const page = await context.newPage();
		const problems = watchProblems(page);
		await page.goto(server.url('/signin'));
		await page.getByRole('button', { name: 'Sign in with MetaMask' }).click();
		await page.waitForURL(server.url('/account'));
		await textMatches(page.getByTestId('signed-in-with'), new RegExp(`^ethereum:${eth.address}$`));

		await page.getByRole('button', { name: 'Verify with TronLink' }).click();
		await page.getByRole('status').filter({ hasText: tron.address }).waitFor();
		const wallets = page.getByRole('list', { name: 'Your wallets' });
		await textMatches(wallets, new RegExp(`${tron.address}\\s*Verified`));
		await textMatches(wallets, new RegExp(`${eth.address}\\s*Verified`));
		assert.deepEqual(problems, []);
		await context.close();
	});

	test('TronLink sign-in signs with tronweb signMessageV2', async () => {
		const tron = tronWallet();
		const context = await browser.newContext({ viewport: DESKTOP });
		await injectTronLink(context, tron);
		const page = await context.newPage();
		await page.goto(server.url('/signin'));
		assert.equal(await page.getByRole('button', { name: 'Sign in with MetaMask' }).count(), 0);
		await page.getByRole('button', { name: 'Sign in with TronLink' }).click();
		await page.waitForURL(server.url('/account'));
		await textMatches(page.getByTestId('signed-in-with'), new RegExp(`^tron:${tron.address}$`));
		await context.close();
	});

	test('without a wallet extension the page shows the message and takes a signature', async () => {
		const eth = Wallet.createRandom();
		const context = await browser.newContext({ viewport: DESKTOP });
		const page = await context.newPage();
		await page.goto(server.url('/signin'));
		assert.equal(await page.getByRole('button', { name: /with (MetaMask|TronLink)/ }).count(), 0);
		await page.getByLabel('Wallet address').fill(eth.address);
		await page.getByRole('button', { name: 'Get the message to sign' }).click();
		const message = await page.getByLabel(/Message to sign/).inputValue();
		assert.match(message, /wants you to sign in with your Ethereum account:/);
		assert.match(message, new RegExp(`^127\\.0\\.0\\.1:\\d+ wants you`));
		await page.getByLabel('Signature').fill(await eth.signMessage(message));
		await page.getByRole('button', { name: 'Sign in', exact: true }).last().click();
		await page.waitForURL(server.url('/account'));
		await textMatches(page.getByTestId('signed-in-with'), new RegExp(`ethereum:${eth.address}`));
		await context.close();
	});

	test('a cookie-authenticated write from another origin is refused 403 csrf_refused', async () => {
		const context = await browser.newContext({ viewport: DESKTOP });
		const page = await context.newPage();
		await registerInPage(page, 'grace');
		const cookie = await sessionCookie(context, server.base);
		const cookieHeader = `${cookie.name}=${cookie.value}`;
		const victim = Wallet.createRandom().address;
		const connect = (headers) =>
			fetch(server.url('/api/wallets/connect'), {
				method: 'POST',
				headers: { 'content-type': 'application/json', cookie: cookieHeader, ...headers },
				body: JSON.stringify({ network: 'ethereum', address: victim })
			});

		// Another site's page, on another port of the same host: the same *site*, so the browser
		// does send the Strict cookie; only the CSRF rule stands between it and the account.
		const attacker = createServer((_request, response) => {
			response.setHeader('content-type', 'text/html');
			response.end(`<!doctype html><form method="post" enctype="text/plain"
				action="${server.url('/api/wallets/connect')}">
				<input name='{"network":"ethereum","address":"${victim}","x":"' value='"}'></form>`);
		});
		await new Promise((done) => attacker.listen(0, '127.0.0.1', done));
		const attackerUrl = `http://127.0.0.1:${attacker.address().port}/`;
		try {
			await page.goto(attackerUrl);
			const fetched = await page.evaluate(async (url) => {
				const body = JSON.stringify({ network: 'ethereum', address: '0x0' });
				// A simple request (no preflight) carries the cookie, and gets refused.
				await fetch(url, { method: 'POST', mode: 'no-cors', credentials: 'include', body });
				// With the custom header the browser must ask first (CORS preflight): never granted.
				try {
					await fetch(url, {
						method: 'POST',
						credentials: 'include',
						headers: { 'content-type': 'application/json', 'x-aiforge-csrf': '1' },
						body
					});
					return 'sent';
				} catch {
					return 'blocked';
				}
			}, server.url('/api/wallets/connect'));
			assert.equal(fetched, 'blocked', 'the preflight for the custom header is refused');

			const [response] = await Promise.all([
				page.waitForResponse(server.url('/api/wallets/connect')),
				page.evaluate(() => document.forms[0].submit())
			]);
			assert.equal(response.status(), 403, 'a cross-site form post is refused');
			assert.equal(
				(await response.json()).error.code,
				'csrf_refused',
				'the cookie was sent and refused'
			);
		} finally {
			attacker.close();
		}

		const foreign = await connect({ origin: 'http://evil.example', 'x-aiforge-csrf': '1' });
		assert.equal(foreign.status, 403);
		assert.equal((await foreign.json()).error.code, 'csrf_refused');
		const noHeader = await connect({ origin: server.base });
		assert.equal(noHeader.status, 403, 'the custom header is required too');
		const noOrigin = await connect({ 'x-aiforge-csrf': '1' });
		assert.equal(noOrigin.status, 403, 'an origin is required');

		const mine = await fetch(server.url('/api/wallets/my-wallets'), {
			headers: { cookie: cookieHeader }
		});
		assert.deepEqual((await mine.json()).wallets, [], 'nothing was written');

		// The control: this app's own origin with the header is accepted, and Bearer clients
		// need neither.
		const same = await connect({ origin: server.base, 'x-aiforge-csrf': '1' });
		assert.equal(same.status, 201);
		const login = await fetch(server.url('/api/auth/login'), {
			method: 'POST',
			headers: { 'content-type': 'application/json' },
			body: JSON.stringify({ email: 'grace@example.com', password: PASSWORD })
		});
		const { access_token } = await login.json();
		assert.ok(access_token, 'an API client still gets its token in the body');
		const bearer = await fetch(server.url('/api/wallets/connect'), {
			method: 'POST',
			headers: { 'content-type': 'application/json', authorization: `Bearer ${access_token}` },
			body: JSON.stringify({ network: 'ethereum', address: Wallet.createRandom().address })
		});
		assert.equal(bearer.status, 201);
		await context.close();
	});

	test('pages carry the security headers and unknown API paths stay JSON 404s', async () => {
		for (const path of ['/', '/account', '/plans/anything']) {
			const response = await fetch(server.url(path));
			assert.equal(response.status, 200, path);
			assert.match(response.headers.get('content-type'), /text\/html/);
			const csp = response.headers.get('content-security-policy');
			assert.match(csp, /script-src 'self'(;|$)/);
			assert.doesNotMatch(csp, /script-src[^;]*unsafe-inline/);
			assert.match(csp, /frame-ancestors 'none'/);
			assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
			assert.equal(response.headers.get('x-frame-options'), 'DENY');
			assert.ok(response.headers.get('referrer-policy'));
			const html = await response.text();
			assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
		}
		const api = await fetch(server.url('/api/no-such-thing'));
		assert.equal(api.status, 404);
		assert.equal((await api.json()).error.code, 'not_found');
		const asset = await fetch(server.url('/_app/immutable/missing.js'));
		assert.equal(asset.status, 404, 'a missing asset is not the page');
	});

	test('keyboard, screen-reader labels, dark theme and the phone menu', async () => {
		const context = await browser.newContext({ viewport: PHONE, colorScheme: 'dark' });
		const page = await context.newPage();
		await page.goto(server.url('/signin'));
		await page.locator('h1').waitFor();
		await page.keyboard.press('Tab');
		assert.equal(
			await page.evaluate(() => document.activeElement?.textContent?.trim()),
			'Skip to content'
		);
		const unlabelled = await page.evaluate(() =>
			[...document.querySelectorAll('input, select, textarea, button')]
				.filter(
					(el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent?.trim())
				)
				.map((el) => el.outerHTML)
		);
		assert.deepEqual(unlabelled, []);
		const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
		assert.equal(await background(), 'rgb(15, 17, 23)', 'dark by prefers-color-scheme');
		await page.screenshot({ path: artifactPath('phone-signin-dark.png'), fullPage: true });
		await page.getByRole('button', { name: 'Switch to light theme' }).click();
		assert.equal(await background(), 'rgb(247, 247, 251)');
		await page.reload();
		assert.equal(await background(), 'rgb(247, 247, 251)', 'the choice is kept');

		const nav = page.getByRole('navigation', { name: 'Main' });
		assert.equal(await nav.isVisible(), false, 'the menu is folded at phone width');
		const menu = page.getByRole('button', { name: 'Menu' });
		await menu.focus();
		await page.keyboard.press('Enter');
		assert.equal(await menu.getAttribute('aria-expanded'), 'true');
		await nav.getByRole('link', { name: 'Plans' }).click();
		await page.waitForURL(server.url('/plans'));
		assert.equal(await nav.isVisible(), false, 'navigating folds it again');
		await context.close();
	});

	test('screenshots of every page at desktop and phone width', async () => {
		for (const [name, viewport] of [
			['desktop', DESKTOP],
			['phone', PHONE]
		]) {
			const context = await browser.newContext({ viewport });
			const page = await context.newPage();
			const problems = watchProblems(page);
			await registerInPage(page, `shot_${name}`);
			for (const path of PAGES) {
				await page.goto(server.url(path));
				await page.locator('h1').first().waitFor();
				await page.waitForLoadState('networkidle');
				assert.equal(await page.locator('h1').count(), 1, `${path}: one h1`);
				const overflow = await page.evaluate(
					() => document.documentElement.scrollWidth - window.innerWidth
				);
				assert.ok(overflow <= 0, `${path} at ${name} width scrolls sideways by ${overflow}px`);
				const file = artifactPath(
					`${name}${path === '/' ? '-home' : path.replaceAll('/', '-')}.png`
				);
				await page.screenshot({ path: file, fullPage: true });
			}
			assert.deepEqual(problems, [], `${name}: no script error, no CSP violation`);
			await context.close();
		}
	});
});
