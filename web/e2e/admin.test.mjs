// The admin's operation pages (issue 18, part 1) through the real `aiforge` binary in headless
// Chromium, on a real local chain (ganache with the test ERC-20): the admin signs in with a
// whitelisted wallet (an injected MetaMask answered by an ethers.js key), opens a user,
// deactivates them with a reason (that user's open page is refused at once), reactivates them,
// filters payments in the URL, runs a month's close and the auditor's checks from the page.
//   cd web && npm run test:e2e   (after `npm run build`, `cargo build --bins`,
//   `npm ci --prefix fixtures/chain`)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { chainSkipReason, ethers, startChain, usdt } from './chain.mjs';
import {
	PHONE,
	advanceClock,
	apiFromPage,
	payOnChain,
	registeredPage,
	signInAgain,
	signedInWithWallet,
	textMatches,
	textOf,
	until
} from './ops-support.mjs';
import { artifactPath, launchBrowser, skipReason, startServer } from './support.mjs';

const skip = skipReason() ?? chainSkipReason();

describe('operating the platform from the admin pages', { skip: skip ?? false }, () => {
	let chain;
	let server;
	let browser;
	const admin = ethers.Wallet.createRandom();

	before(async () => {
		chain = await startChain();
		server = await startServer({
			env: {
				...chain.serverEnv(),
				AIFORGE_ADMIN_WALLETS: admin.address,
				AIFORGE_MANUAL_CLOCK_START: '2026-11-20T12:00:00Z',
				// The admin closes November from the page.
				AIFORGE_CLOSE_AUTOMATIC: 'false'
			}
		});
		browser = await launchBrowser();
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
		await chain?.stop();
	});

	test('the admin deactivates and reactivates a user, filters payments, closes a month and audits it', async () => {
		// A payer with a confirmed plan payment, and Dana with a pending one, in November.
		const payer = await signedInWithWallet(browser, server, chain, chain.wallet(chain.payer_key));
		const bought = await apiFromPage(payer.page, '/api/subscriptions/create', {
			method: 'POST',
			body: JSON.stringify({ plan: 'basic', network: 'ethereum' })
		});
		assert.equal(bought.status, 201, JSON.stringify(bought.body));
		const confirmed = await payOnChain(
			chain,
			payer.page,
			bought.body.payment.payment_id,
			usdt(bought.body.payment.amount)
		);
		assert.equal(confirmed.status, 'confirmed');

		const dana = await registeredPage(browser, server, 'dana');
		const danaId = (await apiFromPage(dana.page, '/api/auth/me')).body.id;
		const pending = await apiFromPage(dana.page, '/api/subscriptions/create', {
			method: 'POST',
			body: JSON.stringify({ plan: 'pro', network: 'ethereum' })
		});
		assert.equal(pending.status, 201, JSON.stringify(pending.body));
		// Dana keeps her payouts page open while the admin works.
		await dana.page.goto(server.url('/payouts'));
		await dana.page.getByTestId('withdraw').waitFor();

		// A signed-in person who is not an admin reads a sentence, not a broken page.
		await dana.page.goto(server.url('/admin'));
		await textMatches(dana.page.getByTestId('admin-refused'), /for the platform's admins/);
		await dana.page.goto(server.url('/payouts'));
		await dana.page.getByTestId('withdraw').waitFor();

		// The admin signs in with the whitelisted wallet and sees the platform's counts.
		const boss = await signedInWithWallet(browser, server, chain, admin);
		await boss.page.getByRole('link', { name: 'Admin', exact: true }).click();
		await boss.page.waitForURL(server.url('/admin'));
		const stats = (await apiFromPage(boss.page, '/api/admin/stats')).body;
		await textMatches(
			boss.page.getByTestId('stat-users-total'),
			new RegExp(`^${stats.users.total}$`)
		);
		assert.equal(stats.users.total, 3, 'the payer, Dana and the admin');
		await textMatches(boss.page.getByTestId('stat-users-deactivated'), /^0$/);
		await boss.page.screenshot({
			path: artifactPath('desktop-admin-overview.png'),
			fullPage: true
		});

		// Users: open Dana, deactivate her; a reason is required.
		await boss.page
			.getByRole('navigation', { name: 'Administration' })
			.getByRole('link', { name: 'Users', exact: true })
			.click();
		// The server searches (any case): the page lists exactly the API's matches.
		await boss.page.getByTestId('users-search').fill('DANA@');
		await boss.page.getByTestId('users-search-submit').click();
		await boss.page.waitForURL(server.url('/admin/users?q=DANA%40'));
		const found = (await apiFromPage(boss.page, '/api/admin/users?q=DANA%40')).body;
		assert.deepEqual(
			found.users.map((u) => u.user_id),
			[danaId]
		);
		await textMatches(boss.page.getByTestId('users-count'), /^1 user match “DANA@”/);
		await until('the search result rows to be the API answer', async () => {
			const rows = await boss.page
				.getByTestId('user-row')
				.evaluateAll((found) => found.map((r) => r.getAttribute('data-user-id')));
			return JSON.stringify(rows) === JSON.stringify([danaId]);
		});
		await boss.page.getByRole('link', { name: 'dana', exact: true }).click();
		await boss.page.waitForURL(server.url(`/admin/users/${danaId}`));
		await textMatches(boss.page.getByTestId('admin-user-state'), /^Active$/);
		await textMatches(boss.page.locator('main'), /Payments 1 in all/);
		await boss.page.getByTestId('deactivate-reason').fill('   ');
		await boss.page.getByTestId('deactivate-user').click();
		await textMatches(boss.page.getByRole('alert'), /Give a reason/);
		await boss.page.getByTestId('deactivate-reason').fill('chargeback under review');
		await boss.page.getByTestId('deactivate-user').click();
		await textMatches(
			boss.page.getByTestId('admin-user-notice'),
			/Deactivated: .*chargeback under review/
		);
		await textMatches(
			boss.page.getByTestId('admin-user-state'),
			/Deactivated since .*: chargeback under review/
		);
		await boss.page.screenshot({
			path: artifactPath('desktop-admin-user-deactivated.png'),
			fullPage: true
		});

		// Dana's open page: her next action is refused at once, and says why.
		await dana.page.getByTestId('withdraw').click();
		await textMatches(dana.page.getByRole('alert'), /this account is deactivated/);
		assert.equal((await apiFromPage(dana.page, '/api/auth/me')).status, 403);

		// Reactivated: the same session works again.
		await boss.page.getByTestId('reactivate-user').click();
		await textMatches(boss.page.getByTestId('admin-user-notice'), /^Reactivated/);
		await textMatches(boss.page.getByTestId('admin-user-state'), /^Active$/);
		assert.equal((await apiFromPage(dana.page, '/api/auth/me')).status, 200);
		await dana.page.getByTestId('withdraw').click();
		await textMatches(
			dana.page.getByRole('alert'),
			/Payouts are not available on this platform yet/
		);
		assert.doesNotMatch(await textOf(dana.page.getByRole('alert')), /deactivated/);

		// Payments: filters in the URL; the table is the API's answer for the same filter.
		await boss.page.goto(server.url('/admin/payments'));
		await textMatches(boss.page.getByTestId('payments-total'), /^2 payments/);
		await boss.page.getByLabel('State').selectOption('confirmed');
		await boss.page.getByRole('button', { name: 'Filter' }).click();
		await boss.page.waitForURL(server.url('/admin/payments?state=confirmed'));
		await textMatches(boss.page.getByTestId('payments-total'), /^1 payment,/);
		const row = boss.page.getByTestId('payment-row');
		assert.equal(await row.count(), 1);
		assert.equal(await row.getAttribute('data-payment-id'), confirmed.payment_id);
		await textMatches(row.getByTestId('payment-state'), /^confirmed$/);
		await textMatches(row, new RegExp(confirmed.tx_hash));
		await textMatches(row, /at 3 confirmations/);
		// A user's payments, from the user filter; a reload keeps the filters.
		await boss.page.goto(server.url(`/admin/payments?state=pending&user_id=${danaId}`));
		await textMatches(boss.page.getByTestId('payments-total'), /^1 payment,/);
		assert.equal(
			await boss.page.getByTestId('payment-row').getAttribute('data-payment-id'),
			pending.body.payment.payment_id
		);
		await boss.page.reload();
		assert.equal(await boss.page.getByLabel('State').inputValue(), 'pending');
		assert.equal(await boss.page.getByLabel('User id').inputValue(), danaId);
		const api = await apiFromPage(boss.page, `/api/admin/payments?state=pending&user_id=${danaId}`);
		assert.equal(api.body.total, 1);
		await boss.page.screenshot({
			path: artifactPath('desktop-admin-payments.png'),
			fullPage: true
		});

		// The ledger: every account, the balances summing to zero, an account's postings.
		await boss.page.goto(server.url('/admin/ledger'));
		await textMatches(boss.page.getByTestId('ledger-sum'), /balances sum to 0\.000000 USDT/);
		const ledger = (await apiFromPage(boss.page, '/api/admin/ledger')).body;
		const fees = ledger.accounts.find((a) => a.kind === 'platform_fees');
		assert.ok(fees, JSON.stringify(ledger));
		await boss.page.getByRole('link', { name: fees.account, exact: true }).click();
		await boss.page.waitForURL(
			server.url(`/admin/ledger?account=${encodeURIComponent(fees.account)}`)
		);
		const postings = boss.page.getByTestId('ledger-postings').locator('tbody tr');
		await until('the postings listed', async () => (await postings.count()) === fees.postings);
		await textMatches(postings.first(), new RegExp(confirmed.payment_id));

		// December: the admin (signed in again: sessions last a day) closes November on the page.
		await advanceClock(server, 12 * 86_400);
		await signInAgain(boss.page, server);
		await boss.page.goto(server.url('/admin/closes?month=2026-11'));
		await textMatches(boss.page.getByTestId('close-not-closed'), /2026-11 is not closed/);
		await boss.page.getByTestId('run-close').click();
		const notice = await textMatches(
			boss.page.getByTestId('close-notice'),
			/^2026-11 is closed: digest [0-9a-f]{64}\.$/
		);
		const recorded = await apiFromPage(boss.page, '/api/revenue/distribution/2026/11');
		assert.equal(recorded.status, 200);
		const digest = recorded.body.distribution.digest;
		assert.ok(notice.includes(digest));
		await textMatches(boss.page.getByTestId('close-digest'), new RegExp(`^${digest}$`));
		// The auditor's checks, from the page.
		await boss.page.getByTestId('audit-replay').click();
		await textMatches(
			boss.page.getByTestId('audit-replay-result'),
			new RegExp(`MATCHES the recorded close of 2026-11 \\(digest ${digest}\\)`)
		);
		await boss.page.getByTestId('audit-verify').click();
		await textMatches(
			boss.page.getByTestId('audit-verify-result'),
			/^event log intact: \d+ events match their seals$/
		);
		assert.equal(
			await boss.page.getByTestId('audit-verify-result').getAttribute('data-intact'),
			'true'
		);
		await boss.page.screenshot({ path: artifactPath('desktop-admin-closes.png'), fullPage: true });

		// The same pages at phone width.
		const phone = await signedInWithWallet(browser, server, chain, admin, PHONE);
		await phone.page.goto(server.url(`/admin/users/${danaId}`));
		await textMatches(phone.page.getByTestId('admin-user-state'), /^Active$/);
		await phone.page.screenshot({ path: artifactPath('phone-admin-user.png'), fullPage: true });
		await phone.page.goto(server.url('/admin/closes?month=2026-11'));
		await until(
			'the close shown',
			async () => (await phone.page.getByTestId('close-digest').count()) > 0
		);
		await phone.page.screenshot({ path: artifactPath('phone-admin-closes.png'), fullPage: true });

		for (const who of [payer, dana, boss, phone]) {
			assert.deepEqual(who.problems, []);
			await who.context.close();
		}
	});
});
