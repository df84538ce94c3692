// Money out from the pages (issue 21, part 5) through the real `aiforge` binary in headless
// Chromium, on a real local chain: ganache with the test ERC-20, the platform wallet as the hot
// wallet (AIFORGE_ETH_HOT_WALLET_KEY, the README's "Payouts" settings). A creator with earnings
// chooses their payout wallet, withdraws, sees the payout complete with its transaction, and
// after November's close verifies their receipt proof in the browser; that payout, over the
// approval threshold, waits until the admin approves it on the admin's payouts page.
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
	signInAgain,
	signedInWithWallet,
	textMatches,
	textOf,
	until
} from './ops-support.mjs';
import { artifactPath, launchBrowser, skipReason, startServer } from './support.mjs';

const skip = skipReason() ?? chainSkipReason();
/** An upstream model card: a model an engine can serve, so a service may offer it. */
const CARD =
	'aiforge upstream model card\nbase_url: http://127.0.0.1:9/v1\nmodel: payouts-journey\n';

describe('a creator is paid out from the pages', { skip: skip ?? false }, () => {
	let chain;
	let server;
	let browser;
	const admin = ethers.Wallet.createRandom();
	const creatorWallet = ethers.Wallet.createRandom();

	before(async () => {
		chain = await startChain();
		server = await startServer({
			env: {
				...chain.serverEnv(),
				AIFORGE_ADMIN_WALLETS: admin.address,
				AIFORGE_MANUAL_CLOCK_START: '2026-11-20T12:00:00Z',
				AIFORGE_CLOSE_AUTOMATIC: 'false',
				// The platform wallet receives the payments and pays out from them.
				AIFORGE_ETH_HOT_WALLET_KEY: chain.platform_key,
				AIFORGE_PAYOUT_MINIMUM: '10',
				AIFORGE_PAYOUT_APPROVAL_THRESHOLD: '100'
			}
		});
		browser = await launchBrowser();
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
		await chain?.stop();
	});

	/** Runs payout passes (as the admin) and mines blocks until `done` holds. */
	async function payUntil(adminPage, what, done) {
		return until(
			what,
			async () => {
				const pass = await apiFromPage(adminPage, '/api/admin/payouts/run', {
					method: 'POST',
					body: '{}'
				});
				assert.equal(pass.status, 200, JSON.stringify(pass.body));
				await chain.mine(1);
				return done();
			},
			60_000
		);
	}

	test('withdraw, approval over the threshold, completed transfers and a proof verified in the browser', async () => {
		const creator = await signedInWithWallet(browser, server, chain, creatorWallet);
		const model = await apiFromPage(creator.page, '/api/models?name=Payouts', {
			method: 'POST',
			body: CARD,
			headers: { 'content-type': 'application/octet-stream' }
		});
		assert.equal(model.status, 201, JSON.stringify(model.body));
		const modelId = model.body.model.id;
		const published = await apiFromPage(creator.page, `/api/publishing/model/${modelId}/publish`, {
			method: 'POST',
			body: '{}'
		});
		assert.equal(published.status, 200, JSON.stringify(published.body));
		const services = {};
		for (const [name, price] of [
			['Hundred', '100'],
			['Two hundred', '200']
		]) {
			const created = await apiFromPage(creator.page, '/api/marketplace/create', {
				method: 'POST',
				body: JSON.stringify({
					model_id: modelId,
					name,
					pricing: { type: 'monthly', price_per_month: price }
				})
			});
			assert.equal(created.status, 201, JSON.stringify(created.body));
			services[name] = created.body.service.id;
		}

		// Nothing earned yet: the withdraw's refusal is a sentence naming the minimum.
		await creator.page.goto(server.url('/payouts'));
		await textMatches(creator.page.getByTestId('payout-minimum'), /^10 USDT$/);
		await creator.page.getByTestId('withdraw').click();
		await textMatches(
			creator.page.getByRole('alert'),
			/^Nothing to withdraw yet: a payout needs at least 10 USDT owed to you/
		);

		// A subscriber pays $100 for the first service: the creator is owed $90.
		const payer = await signedInWithWallet(browser, server, chain, chain.wallet(chain.payer_key));
		async function subscribe(serviceId) {
			const answer = await apiFromPage(payer.page, `/api/marketplace/${serviceId}/subscribe`, {
				method: 'POST',
				body: JSON.stringify({ network: 'ethereum' })
			});
			assert.equal(answer.status, 201, JSON.stringify(answer.body));
			return payOnChain(
				chain,
				payer.page,
				answer.body.payment.payment_id,
				usdt(answer.body.payment.amount)
			);
		}
		await subscribe(services.Hundred);

		// The creator chooses their verified wallet for payouts, and withdraws.
		await creator.page.reload();
		const select = creator.page.getByTestId('payout-wallet-select-ethereum');
		assert.equal((await select.inputValue()).toLowerCase(), creatorWallet.address.toLowerCase());
		await creator.page.getByTestId('choose-payout-wallet-ethereum').click();
		await textMatches(
			creator.page.getByTestId('current-payout-wallet-ethereum'),
			new RegExp(`Paid to ${creatorWallet.address}`, 'i')
		);
		const before = await chain.balance(creatorWallet.address);
		await creator.page.getByTestId('withdraw').click();
		await textMatches(creator.page.getByTestId('withdraw-notice'), /^Withdraw requested: 90 USDT/);

		const boss = await signedInWithWallet(browser, server, chain, admin);
		await payUntil(boss.page, 'the withdraw completed', async () => {
			const mine = await apiFromPage(creator.page, '/api/payouts/mine');
			return mine.body.payouts[0]?.state === 'completed';
		});
		await creator.page.reload();
		const first = creator.page.getByTestId('my-payout').first();
		await textMatches(first.getByTestId('payout-state'), /^Completed$/);
		const mine = (await apiFromPage(creator.page, '/api/payouts/mine')).body.payouts;
		const txHash = mine[0].tx_hash;
		assert.match(txHash, /^0x[0-9a-f]{64}$/);
		await textMatches(first.getByTestId('payout-tx'), new RegExp(`^${txHash}$`));
		assert.equal(
			await first.getByTestId('payout-tx').getAttribute('href'),
			mine[0].explorer_url ?? `https://etherscan.io/tx/${txHash}`
		);
		assert.equal((await chain.balance(creatorWallet.address)) - before, usdt('90'));
		await creator.page.screenshot({
			path: artifactPath('desktop-payouts-withdrawn.png'),
			fullPage: true
		});

		// $200 more in November: the creator is owed $180, over the approval threshold. A second
		// creator is owed $45, so the close's receipt has two leaves and the proof a sibling.
		await subscribe(services['Two hundred']);
		const second = await signedInWithWallet(browser, server, chain, ethers.Wallet.createRandom());
		const secondModel = await apiFromPage(second.page, '/api/models?name=Second', {
			method: 'POST',
			body: CARD.replace('payouts-journey', 'second-creator'),
			headers: { 'content-type': 'application/octet-stream' }
		});
		assert.equal(secondModel.status, 201, JSON.stringify(secondModel.body));
		const secondId = secondModel.body.model.id;
		await apiFromPage(second.page, `/api/publishing/model/${secondId}/publish`, {
			method: 'POST',
			body: '{}'
		});
		const fifty = await apiFromPage(second.page, '/api/marketplace/create', {
			method: 'POST',
			body: JSON.stringify({
				model_id: secondId,
				name: 'Fifty',
				pricing: { type: 'monthly', price_per_month: '50' }
			})
		});
		assert.equal(fifty.status, 201, JSON.stringify(fifty.body));
		const chosen = await apiFromPage(second.page, '/api/wallets/payout', {
			method: 'POST',
			body: JSON.stringify({ network: 'ethereum', address: second.wallet.address })
		});
		assert.equal(chosen.status, 200, JSON.stringify(chosen.body));
		await subscribe(fifty.body.service.id);

		// December 2nd: the admin closes November on the page and runs a payout pass.
		await advanceClock(server, 12 * 86_400);
		await signInAgain(boss.page, server);
		await signInAgain(creator.page, server);
		await boss.page.goto(server.url('/admin/closes?month=2026-11'));
		await boss.page.getByTestId('run-close').click();
		await textMatches(boss.page.getByTestId('close-notice'), /^2026-11 is closed/);
		await boss.page.goto(server.url('/admin/payouts'));
		await boss.page.getByTestId('run-payouts').click();
		await textMatches(boss.page.getByTestId('payouts-notice'), /^Pass done: 2 requested/);
		const pending = boss.page.getByTestId('pending-payout');
		await until('the payout awaiting approval', async () => (await pending.count()) === 1);
		await textMatches(pending, /180 USDT to .* \(close of 2026-11\)/);
		await textMatches(boss.page.getByTestId('hot-wallets'), /ethereum .* USDT, gas/);
		await boss.page.screenshot({
			path: artifactPath('desktop-admin-payouts-pending.png'),
			fullPage: true
		});

		// It waits for the admin: nothing is sent.
		await creator.page.goto(server.url('/payouts'));
		const waiting = creator.page.locator(
			'[data-testid="my-payout"][data-state="awaiting_approval"]'
		);
		await textMatches(waiting, /180 USDT Awaiting approval close of 2026-11/);
		const middle = await chain.balance(creatorWallet.address);
		assert.equal(middle - before, usdt('90'));

		// Approved on the page, it goes and completes.
		await pending.getByTestId('approve-payout').click();
		await textMatches(boss.page.getByTestId('payouts-notice'), /^Approved: the payout is/);
		const payoutId = await until('the approved payout', async () => {
			const all = (await apiFromPage(boss.page, '/api/admin/payouts?month=2026-11')).body.payouts;
			return all.find((p) => p.amount === '180.000000')?.payout_id;
		});
		await payUntil(boss.page, 'the approved payout completed', async () => {
			const all = (await apiFromPage(boss.page, '/api/admin/payouts?state=completed')).body.payouts;
			return all.some((p) => p.payout_id === payoutId);
		});
		await boss.page.reload();
		const row = boss.page.locator(`[data-testid="payout-row"][data-payout-id="${payoutId}"]`);
		await textMatches(row, /Completed/);
		assert.equal((await chain.balance(creatorWallet.address)) - middle, usdt('180'));

		// The creator sees it completed with its transaction, and verifies the receipt proof.
		await creator.page.reload();
		const paid = creator.page.locator(`[data-testid="my-payout"][data-payout-id="${payoutId}"]`);
		await textMatches(paid.getByTestId('payout-state'), /^Completed$/);
		await textMatches(paid.getByTestId('payout-tx'), /^0x[0-9a-f]{64}$/);
		await paid.getByTestId('show-proof').click();
		const receipt = await (await fetch(server.url('/api/payouts/receipts/2026/11'))).json();
		assert.equal(receipt.payouts, 2, JSON.stringify(receipt));
		await textMatches(
			paid.getByTestId('payout-proof'),
			/sibling on the (left|right): [0-9a-f]{64}/
		);
		await textMatches(paid.getByTestId('receipt-root'), new RegExp(`^${receipt.root}$`));
		await paid.getByTestId('verify-proof').click();
		await textMatches(
			paid.getByTestId('proof-verdict'),
			/^Verified: your payout is in the published receipt/
		);
		assert.equal(await paid.getByTestId('proof-verdict').getAttribute('data-verified'), 'true');
		await creator.page.screenshot({
			path: artifactPath('desktop-payouts-verified.png'),
			fullPage: true
		});

		// At phone width.
		const phone = await signedInWithWallet(browser, server, chain, creatorWallet, PHONE);
		await phone.page.goto(server.url('/payouts'));
		await until(
			'the payouts listed',
			async () => (await phone.page.getByTestId('my-payout').count()) === 2
		);
		assert.match(await textOf(phone.page.getByTestId('my-payout').first()), /180 USDT Completed/);
		await phone.page.screenshot({ path: artifactPath('phone-payouts.png'), fullPage: true });

		for (const who of [creator, payer, second, boss, phone]) {
			assert.deepEqual(who.problems, []);
			await who.context.close();
		}
	});
});
