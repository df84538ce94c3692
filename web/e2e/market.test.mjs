// Browser journeys that pay from the page (issue 16) through the real `aiforge` binary in
// headless Chromium, on a real local chain: ganache with a real ERC-20 "USDT"
// (fixtures/chain), a MetaMask-shaped provider in the page whose transactions a real ethers.js
// wallet signs and sends, and blocks mined from the test to reach the confirmations.
//   cd web && npm run test:e2e   (after `npm run build`, `cargo build --bins`,
//   `npm ci --prefix fixtures/chain`)
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chainSkipReason, injectPayingEthereum, startChain, usdt } from './chain.mjs';
import {
	artifactPath,
	launchBrowser,
	skipReason,
	startMockOpenAi,
	startServer,
	watchProblems
} from './support.mjs';
import { apiFromPage, DESKTOP, PHONE, textMatches, textOf, until } from './ops-support.mjs';

const skip = skipReason() ?? chainSkipReason();
const PASSWORD = 'analytical engine';
const MOCK_REPLY = 'Hello from the marketplace model';
/** The official OpenAI Python SDK, when scripts/python-sdk installed it (else plain fetch). */
const PYTHON_SDK = join(
	process.env.AIFORGE_TOOLS_DIR ?? '/var/cache/aiforge/tools',
	'python',
	'bin',
	'python'
);

/** One chat completion with an API key: through the official Python SDK when it is here. */
async function chatWithKey(base, key, model) {
	if (existsSync(PYTHON_SDK)) {
		const script = [
			'import sys',
			'from openai import OpenAI',
			'client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])',
			'r = client.chat.completions.create(model=sys.argv[3], messages=[{"role": "user", "content": "Hi"}])',
			'print(r.choices[0].message.content)'
		].join('\n');
		return execFileSync(PYTHON_SDK, ['-c', script, `${base}/api/v1`, key, model], {
			encoding: 'utf8'
		}).trim();
	}
	const response = await fetch(`${base}/api/v1/chat/completions`, {
		method: 'POST',
		headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
		body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hi' }] })
	});
	assert.equal(response.status, 200, await response.clone().text());
	return (await response.json()).choices[0].message.content;
}

/** One chat completion by plain HTTP: the status and the body (OpenAI's error shape on refusal). */
async function callWithKey(base, key, model) {
	const response = await fetch(`${base}/api/v1/chat/completions`, {
		method: 'POST',
		headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
		body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hi' }] })
	});
	return { status: response.status, body: await response.json() };
}

/**
 * A small but well-formed GGUF file (version 3, no tensors, one metadata string) padded to
 * `size` bytes: enough for the upload's progress to be seen.
 */
function tinyGguf(name, size) {
	const text = (t) => {
		const bytes = Buffer.from(t, 'utf8');
		const length = Buffer.alloc(8);
		length.writeBigUInt64LE(BigInt(bytes.length));
		return Buffer.concat([length, bytes]);
	};
	const u32 = (n) => {
		const b = Buffer.alloc(4);
		b.writeUInt32LE(n);
		return b;
	};
	const u64 = (n) => {
		const b = Buffer.alloc(8);
		b.writeBigUInt64LE(BigInt(n));
		return b;
	};
	const header = Buffer.concat([
		Buffer.from('GGUF'),
		u32(3),
		u64(0),
		u64(1),
		text('general.name'),
		u32(8),
		text(name)
	]);
	const file = Buffer.alloc(Math.max(size, header.length));
	header.copy(file);
	return file;
}

describe('paying from the wallet in the page', { skip: skip ?? false }, () => {
	let chain;
	let mock;
	let server;
	let browser;

	before(async () => {
		chain = await startChain();
		mock = await startMockOpenAi({ reply: MOCK_REPLY });
		// The local node serves the mock for the model whose bytes are its card (api/src/gateway/local.rs).
		server = await startServer({
			localNode: `upstream:${mock.url}/v1#mock`,
			env: chain.serverEnv()
		});
		browser = await launchBrowser();
		// A second person with USDT of their own: 100 from the funded payer.
		await chain.transfer(chain.payer_key, chain.other, usdt('100'));
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
		await mock?.stop();
		await chain?.stop();
	});

	/** A browser whose MetaMask holds `key`, signed in with it (the wallet is then the user's). */
	async function signedInWithWallet(key, viewport = DESKTOP) {
		const context = await browser.newContext({ viewport });
		const wallet = typeof key === 'string' ? chain.wallet(key) : key;
		const metamask = await injectPayingEthereum(context, chain, wallet);
		const page = await context.newPage();
		const problems = watchProblems(page);
		await page.goto(server.url('/signin'));
		await page.getByRole('button', { name: 'Sign in with MetaMask' }).click();
		await page.waitForURL(server.url('/account'));
		return { context, page, problems, wallet, metamask };
	}

	/** A creator with an email account (no wallet needed to offer a free first model). */
	async function creatorPage(name, viewport = DESKTOP) {
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

	/** The bytes the local node serves: its upstream card in the data dir. */
	function servedCard() {
		const name = readdirSync(server.dataDir).find((f) => /^upstream-.*\.card$/.test(f));
		assert.ok(name, 'the local node wrote its card');
		return readFileSync(join(server.dataDir, name), 'utf8');
	}

	test('a consumer buys the Basic plan paying from the page and watches 1/3, 2/3, 3/3', async () => {
		const { context, page, problems, metamask } = await signedInWithWallet(chain.payer_key);
		// What the page pays with is the server's configuration, public.
		const networks = await (await fetch(server.url('/api/payments/networks'))).json();
		assert.deepEqual(networks, {
			networks: [
				{
					network: 'ethereum',
					chain_id: chain.chain_id,
					usdt_contract: chain.token,
					decimals: 6,
					platform_wallet: chain.platform,
					confirmations: 3
				}
			]
		});
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

	test('a consumer finds a service by search, subscribes paying from the page, copies the key, and the key answers', async () => {
		// The creator's side through the API (the studio's own journey is below).
		const creator = await creatorPage('quill');
		const uploaded = await apiFromPage(
			creator.page,
			'/api/models?name=Quill%20Writer&tags=writing,demo',
			{
				method: 'POST',
				body: servedCard(),
				headers: { 'content-type': 'application/octet-stream' }
			}
		);
		assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
		const modelId = uploaded.body.model.id;
		const published = await apiFromPage(creator.page, `/api/publishing/model/${modelId}/publish`, {
			method: 'POST',
			body: '{}'
		});
		assert.equal(published.status, 200, JSON.stringify(published.body));
		const created = await apiFromPage(creator.page, '/api/marketplace/create', {
			method: 'POST',
			body: JSON.stringify({
				model_id: modelId,
				name: 'Quill Writer API',
				description: 'Writes prose on request.',
				pricing: { type: 'monthly', price_per_month: '5' },
				rate_limits: { requests_per_minute: 60 }
			})
		});
		assert.equal(created.status, 201, JSON.stringify(created.body));
		await creator.context.close();

		const { context, page, problems } = await signedInWithWallet(chain.payer_key);
		await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.base });
		await page.goto(server.url('/marketplace'));
		await page.getByRole('searchbox', { name: 'Search' }).fill('quill');
		await page.getByRole('button', { name: 'Search', exact: true }).click();
		await page.waitForURL(/q=quill/);
		// The published model and its service.
		await textMatches(page.getByTestId('marketplace-count'), /^2 results for “quill”$/);
		await page.getByLabel('Show').selectOption('service');
		await page.waitForURL(/kind=service/);
		await textMatches(page.getByTestId('marketplace-count'), /^1 result for “quill”$/);
		await page.screenshot({ path: artifactPath('desktop-marketplace.png'), fullPage: true });
		await page.getByRole('link', { name: 'Quill Writer API' }).click();
		await textMatches(page.getByTestId('service-price'), /^\$5 \/ month$/);
		await page.getByText('60 requests a minute').waitFor();
		await page.screenshot({ path: artifactPath('desktop-service.png'), fullPage: true });

		await page.getByRole('button', { name: 'Subscribe' }).click();
		const reveal = page.getByTestId('api-key-reveal');
		const key = await reveal.getByTestId('new-api-key').inputValue();
		assert.match(key, /^aiforge_/);
		await reveal.getByRole('button', { name: 'Copy key' }).click();
		assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
		assert.equal(await textOf(reveal.getByTestId('api-model-id')), modelId);
		assert.equal(await textOf(reveal.getByTestId('api-base-url')), `${server.base}/api/v1`);
		await reveal.getByRole('tab', { name: 'Python (openai)' }).click();
		assert.match(
			await textOf(reveal.getByTestId('snippet-python')),
			new RegExp(`api_key="${key}"`)
		);

		const payment = page.getByTestId('payment');
		await payment.getByRole('button', { name: 'Pay 5 USDT from my wallet' }).click();
		await textMatches(payment.getByTestId('payment-confirmations'), /^1\/3$/);
		await chain.mine(2);
		await page.getByTestId('subscription-active').waitFor();
		await page.screenshot({ path: artifactPath('desktop-subscribed.png'), fullPage: true });

		assert.equal(await chatWithKey(server.base, key, modelId), MOCK_REPLY);

		await page.getByRole('link', { name: 'My subscriptions' }).click();
		const item = page.getByTestId('subscription-item');
		await textMatches(item.getByTestId('subscription-state'), /^Active$/);
		await textMatches(item.getByTestId('subscription-usage'), /^1 requests?,/);
		await textMatches(item.getByTestId('subscription-period-usage'), /^1 request, \d+ tokens$/);
		await page.screenshot({ path: artifactPath('desktop-subscriptions.png'), fullPage: true });

		// The same pages at phone width.
		await page.setViewportSize(PHONE);
		await page.screenshot({ path: artifactPath('phone-subscriptions.png'), fullPage: true });
		await page.goto(server.url('/marketplace?q=quill&kind=service'));
		await textMatches(page.getByTestId('marketplace-count'), /^1 result for “quill”$/);
		await page.screenshot({ path: artifactPath('phone-marketplace.png'), fullPage: true });
		await page.getByRole('link', { name: 'Quill Writer API' }).click();
		await textMatches(page.getByTestId('service-price'), /^\$5 \/ month$/);
		await page.screenshot({ path: artifactPath('phone-service.png'), fullPage: true });
		assert.deepEqual(problems, []);
		await context.close();
	});

	test('a creator uploads a GGUF with a progress bar, publishes it free, pays $5 from the page for a second, and creates a monthly service', async () => {
		const creatorWallet = await chain.fundedWallet(usdt('20'));
		const { context, page, problems, metamask } = await signedInWithWallet(creatorWallet);
		await page.goto(server.url('/studio'));
		// Upload at 4 MB/s (Chromium's own throttling): the bar is seen between 0 and 100%.
		const cdp = await context.newCDPSession(page);
		await cdp.send('Network.enable');
		await cdp.send('Network.emulateNetworkConditions', {
			offline: false,
			latency: 0,
			downloadThroughput: -1,
			uploadThroughput: 4 * 1024 * 1024
		});
		const gguf = tinyGguf('tiny-first', 6 * 1024 * 1024);
		const upload = page.getByRole('form', { name: 'Upload a model' });
		await upload.getByLabel('Model file (GGUF)').setInputFiles({
			name: 'tiny-first.gguf',
			mimeType: 'application/octet-stream',
			buffer: gguf
		});
		await upload.getByLabel('Tags (comma-separated)').fill('tiny, test');
		await upload.getByRole('button', { name: 'Upload' }).click();
		const seen = await until('a percentage between 0 and 100', async () => {
			const percent = Number((await textOf(upload.getByTestId('upload-percent'))).replace('%', ''));
			return percent > 0 && percent < 100 ? percent : null;
		});
		assert.ok(seen > 0 && seen < 100);
		await page.screenshot({ path: artifactPath('desktop-studio-uploading.png'), fullPage: true });
		await textMatches(upload.getByTestId('upload-done'), /^Uploaded tiny-first\.$/, 30_000);
		await cdp.send('Network.emulateNetworkConditions', {
			offline: false,
			latency: 0,
			downloadThroughput: -1,
			uploadThroughput: -1
		});
		const first = page.getByTestId('studio-model').filter({ hasText: 'tiny-first' });
		await textMatches(first.getByTestId('studio-model-state'), /^Not published$/);

		// The server has exactly the bytes sent.
		const { body: mine } = await apiFromPage(page, '/api/models/my-models');
		const stored = mine.models.find((m) => m.name === 'tiny-first');
		assert.equal(stored.size_bytes, gguf.length);
		const { createHash } = await import('node:crypto');
		assert.equal(stored.sha256, createHash('sha256').update(gguf).digest('hex'));

		await first.getByRole('link', { name: 'tiny-first' }).click();
		// A GGUF header without tensors: judged at upload, and its creator is told why.
		await textMatches(page.getByTestId('model-serving'), /^Not served here: .+\.$/);
		await page.getByRole('button', { name: 'Publish free' }).click();
		await textMatches(page.getByTestId('model-state'), /^Listed · \d+ d \d+ h left$/);

		// A second model: the first free publication is used, so $5 from the wallet.
		await page.goto(server.url('/studio'));
		await upload.getByLabel('Model file (GGUF)').setInputFiles({
			name: 'tiny-second.gguf',
			mimeType: 'application/octet-stream',
			// An upstream model card: a service needs a model an engine serves (a GGUF without
			// tensors is judged not servable at upload), and the card names the local upstream.
			buffer: Buffer.from(servedCard().replace(/^model: .*$/m, 'model: tiny-second'))
		});
		await upload.getByRole('button', { name: 'Upload' }).click();
		await textMatches(upload.getByTestId('upload-done'), /^Uploaded tiny-second\.$/);
		await page
			.getByTestId('studio-model')
			.filter({ hasText: 'tiny-second' })
			.getByRole('link', { name: 'tiny-second' })
			.click();
		await page.getByRole('button', { name: 'Pay $5 and publish' }).click();
		const payment = page.getByTestId('payment');
		await payment.getByRole('button', { name: 'Pay 5 USDT from my wallet' }).click();
		await textMatches(payment.getByTestId('payment-confirmations'), /^1\/3$/);
		await chain.mine(2);
		await textMatches(page.getByTestId('model-state'), /^Listed · /);
		assert.equal(metamask.sent.length, 1);

		// A monthly service; a limit of 0 is refused by the server, at its field.
		await page.getByRole('button', { name: 'Create a service' }).click();
		await page.getByLabel('Service name').fill('Tiny Second API');
		await page.getByLabel('Price a month (USDT)').fill('3');
		await page.getByLabel('Requests a minute').fill('0');
		await page.getByRole('button', { name: 'Create the service' }).click();
		await textMatches(page.locator('fieldset.invalid .field-error'), /limit of 0/);
		await page.screenshot({ path: artifactPath('desktop-studio-model.png'), fullPage: true });
		await page.setViewportSize(PHONE);
		await page.screenshot({ path: artifactPath('phone-studio-model.png'), fullPage: true });
		await page.setViewportSize(DESKTOP);
		await page.getByLabel('Requests a minute').fill('30');
		await page.getByRole('button', { name: 'Create the service' }).click();
		await page.getByText('Tiny Second API', { exact: false }).first().waitFor();
		const { body: services } = await apiFromPage(page, '/api/marketplace/my-services');
		assert.deepEqual(
			services.services.map((s) => [s.name, s.pricing.type, s.rate_limits.requests_per_minute]),
			[['Tiny Second API', 'monthly', 30]]
		);
		await page.goto(server.url('/studio'));
		await page.getByTestId('studio-model').first().waitFor();
		await page.screenshot({ path: artifactPath('desktop-studio.png'), fullPage: true });
		await page.setViewportSize(PHONE);
		await page.screenshot({ path: artifactPath('phone-studio.png'), fullPage: true });
		assert.deepEqual(problems, []);
		await context.close();
	});

	test('a group of three: roles, a 50/30/20 split saved in the editor, 50/30/19 refused', async () => {
		const people = [];
		for (const name of ['ada', 'grace', 'hedy']) {
			const person = await creatorPage(`split_${name}`);
			const { body } = await apiFromPage(person.page, '/api/auth/me');
			people.push({ ...person, id: body.id });
		}
		const [owner, admin, member] = people;
		await admin.context.close();
		await member.context.close();
		const { page, problems } = owner;
		await page.goto(server.url('/studio/groups'));
		await page.getByLabel('Name').fill('Three of us');
		await page.getByRole('button', { name: 'Create the group' }).click();
		await page.waitForURL(/\/studio\/groups\/[0-9a-f-]+$/);
		const groupId = page.url().split('/').pop();
		for (const [person, role] of [
			[admin, 'ADMIN'],
			[member, 'MEMBER']
		]) {
			await page.getByLabel('Add a member').fill(person.id);
			await page.getByLabel('Role of the new member').selectOption(role);
			await page.getByRole('button', { name: 'Add', exact: true }).click();
			await page.getByTestId('group-member').filter({ hasText: person.id }).waitFor();
		}
		// A role changed in the table.
		await page.getByLabel(`Role of ${member.id}`).selectOption('VIEWER');
		await until('the new role', async () => {
			const { body } = await apiFromPage(page, `/api/groups/${groupId}`);
			return body.members.find((m) => m.user_id === member.id)?.role === 'VIEWER';
		});
		await page.getByLabel(`Role of ${member.id}`).selectOption('MEMBER');

		const uploaded = await apiFromPage(page, `/api/models?name=Group%20Model&group_id=${groupId}`, {
			method: 'POST',
			body: 'group model bytes',
			headers: { 'content-type': 'application/octet-stream' }
		});
		assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
		const modelId = uploaded.body.model.id;
		await page.reload();
		const editor = page.getByTestId('split-editor');
		await textMatches(
			editor.getByTestId('split-current'),
			/none: all of it goes to the group's owner/
		);
		const share = (person) => editor.getByLabel(`Share of ${person.id}`);

		await share(owner).fill('50');
		await share(admin).fill('30');
		await share(member).fill('19');
		await textMatches(
			editor.getByTestId('split-total'),
			/^The shares add up to 99%; they must add up to exactly 100%\.$/
		);
		assert.equal(await editor.getByRole('button', { name: 'Save the split' }).isDisabled(), true);
		// The server refuses it too (the page's check is only a courtesy).
		const refused = await apiFromPage(page, `/api/group-revenue/model/${modelId}/split`, {
			method: 'POST',
			body: JSON.stringify({
				shares: [
					{ user_id: owner.id, percent: '50' },
					{ user_id: admin.id, percent: '30' },
					{ user_id: member.id, percent: '19' }
				]
			})
		});
		assert.equal(refused.status, 422);
		await page.screenshot({
			path: artifactPath('desktop-group-split-refused.png'),
			fullPage: true
		});

		await share(member).fill('20');
		await textMatches(editor.getByTestId('split-total'), /^Total 100%\.$/);
		await editor.getByRole('button', { name: 'Save the split' }).click();
		await textMatches(editor.getByTestId('split-pending'), /50%.*30%.*20%/);
		const { body: split } = await apiFromPage(page, `/api/group-revenue/model/${modelId}/split`);
		assert.deepEqual(
			split.pending.shares.map((s) => [s.user_id, s.percent]),
			[
				[owner.id, '50'],
				[admin.id, '30'],
				[member.id, '20']
			]
		);

		// Ownership goes to the admin; the former owner stays a member.
		await page.getByLabel('Transfer ownership to').selectOption(admin.id);
		await page.getByRole('button', { name: 'Transfer ownership' }).click();
		await until('the new owner', async () => {
			const { body } = await apiFromPage(page, `/api/groups/${groupId}`);
			return body.group.owner_id === admin.id;
		});
		await page.setViewportSize(PHONE);
		await page.screenshot({ path: artifactPath('phone-group.png'), fullPage: true });
		assert.deepEqual(problems, []);
		await owner.context.close();
	});
	test('a buyer buys a model on its page and downloads it byte for byte; a non-buyer is refused', async () => {
		const creator = await signedInWithWallet(await chain.fundedWallet(usdt('1')));
		const bytes = tinyGguf('for-sale', 256 * 1024);
		await creator.page.goto(server.url('/studio'));
		const upload = creator.page.getByRole('form', { name: 'Upload a model' });
		await upload.getByLabel('Model file (GGUF)').setInputFiles({
			name: 'for-sale.gguf',
			mimeType: 'application/octet-stream',
			buffer: bytes
		});
		await upload.getByRole('button', { name: 'Upload' }).click();
		await textMatches(upload.getByTestId('upload-done'), /^Uploaded for-sale\.$/);
		await creator.page.getByRole('link', { name: 'for-sale' }).click();
		await creator.page.getByRole('button', { name: 'Publish free' }).click();
		await textMatches(creator.page.getByTestId('model-state'), /^Listed · /);
		await creator.page.getByLabel('Price (USDT)').fill('7');
		await creator.page.getByRole('button', { name: 'Put it up for sale' }).click();
		await textMatches(creator.page.getByTestId('sale-state'), /^For sale at \$7/);
		const modelId = creator.page.url().split('/').pop();
		assert.deepEqual(creator.problems, []);
		await creator.context.close();

		const buyerWallet = await chain.fundedWallet(usdt('10'));
		const { context, page, problems } = await signedInWithWallet(buyerWallet);
		await page.goto(server.url('/marketplace?kind=model&q=for-sale'));
		await textMatches(page.getByTestId('marketplace-count'), /^1 result for “for-sale”$/);
		await textMatches(page.getByTestId('search-result-price'), /^Buy the file for \$7$/);
		await page.getByRole('link', { name: 'for-sale' }).click();
		await page.waitForURL(server.url(`/marketplace/models/${modelId}`));
		const { createHash } = await import('node:crypto');
		const sha256 = createHash('sha256').update(bytes).digest('hex');
		assert.equal(await textOf(page.getByTestId('model-sha256')), sha256);
		await page.screenshot({ path: artifactPath('desktop-model.png'), fullPage: true });
		await page.getByRole('button', { name: 'Buy for $7' }).click();
		const payment = page.getByTestId('payment');
		await payment.getByRole('button', { name: 'Pay 7 USDT from my wallet' }).click();
		await textMatches(payment.getByTestId('payment-confirmations'), /^1\/3$/);
		await chain.mine(2);
		const download = page.getByTestId('model-download');
		await download.waitFor();
		const got = await page.evaluate(
			async (href) => {
				const response = await fetch(href);
				const body = await response.arrayBuffer();
				const digest = await crypto.subtle.digest('SHA-256', body);
				return {
					status: response.status,
					size: body.byteLength,
					sha256: Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join(
						''
					)
				};
			},
			await download.getAttribute('href')
		);
		assert.deepEqual(got, { status: 200, size: bytes.length, sha256 });
		await page.setViewportSize(PHONE);
		await page.screenshot({ path: artifactPath('phone-model.png'), fullPage: true });
		assert.deepEqual(problems, []);
		await context.close();

		const stranger = await creatorPage('stranger');
		const refused = await apiFromPage(stranger.page, `/api/models/${modelId}/download`);
		assert.equal(refused.status, 403);
		await stranger.context.close();
	});
});

describe(
	'renewing and topping up from the page, on a manual clock',
	{ skip: skip ?? false },
	() => {
		const DAY_SECS = 86_400;
		let chain;
		let mock;
		let server;
		let browser;
		let modelId;
		const services = {};

		before(async () => {
			chain = await startChain();
			mock = await startMockOpenAi({ reply: MOCK_REPLY });
			server = await startServer({
				localNode: `upstream:${mock.url}/v1#mock`,
				env: { ...chain.serverEnv(), AIFORGE_MANUAL_CLOCK_START: '2026-10-01T00:00:00Z' }
			});
			browser = await launchBrowser();
			// The creator's side through the API: the served model, published, with two services.
			const context = await browser.newContext();
			const page = await context.newPage();
			await page.goto(server.url('/register'));
			await page.getByLabel('Email').fill('renewals@example.com');
			await page.getByLabel('Username').fill('renewals');
			await page.getByLabel('Password').fill(PASSWORD);
			await page.getByRole('button', { name: 'Create account' }).click();
			await page.waitForURL(server.url('/plans'));
			const card = readdirSync(server.dataDir).find((f) => /^upstream-.*\.card$/.test(f));
			const uploaded = await apiFromPage(page, '/api/models?name=Renewable', {
				method: 'POST',
				body: readFileSync(join(server.dataDir, card), 'utf8'),
				headers: { 'content-type': 'application/octet-stream' }
			});
			modelId = uploaded.body.model.id;
			await apiFromPage(page, `/api/publishing/model/${modelId}/publish`, {
				method: 'POST',
				body: '{}'
			});
			for (const [name, pricing] of [
				['Monthly Renewable', { type: 'monthly', price_per_month: '4' }],
				['Per Call Renewable', { type: 'pay_per_request', price_per_request: '1' }]
			]) {
				const created = await apiFromPage(page, '/api/marketplace/create', {
					method: 'POST',
					body: JSON.stringify({ model_id: modelId, name, pricing })
				});
				assert.equal(created.status, 201, JSON.stringify(created.body));
				services[name] = created.body.service.id;
			}
			await context.close();
		});

		after(async () => {
			await browser?.close();
			await server?.stop();
			await mock?.stop();
			await chain?.stop();
		});

		async function signIn(context) {
			const page = await context.newPage();
			await page.goto(server.url('/signin'));
			await page.getByRole('button', { name: 'Sign in with MetaMask' }).click();
			await page.waitForURL(server.url('/account'));
			return page;
		}

		/** Subscribes on the service page and pays from the wallet; answers the key shown once. */
		async function subscribe(page, serviceId, credit) {
			await page.goto(server.url(`/marketplace/services/${serviceId}`));
			if (credit) await page.getByLabel(/Prepaid credit/).fill(credit);
			await page.getByRole('button', { name: 'Subscribe' }).click();
			const key = await page.getByTestId('new-api-key').inputValue();
			const payment = page.getByTestId('payment');
			await payment.getByRole('button', { name: /^Pay .* USDT from my wallet$/ }).click();
			await textMatches(payment.getByTestId('payment-confirmations'), /^1\/3$/);
			await chain.mine(2);
			await page.getByTestId('subscription-active').waitFor();
			return key;
		}

		/** Pays the payment shown in `within` from the wallet, mining the confirmations. */
		async function payIn(within) {
			const payment = within.getByTestId('payment');
			await payment.getByRole('button', { name: /^Pay .* USDT from my wallet$/ }).click();
			await textMatches(payment.getByTestId('payment-confirmations'), /^1\/3$/);
			await chain.mine(2);
		}

		test('an expired key works again, the same key, after a renewal paid from My subscriptions', async () => {
			const wallet = await chain.fundedWallet(usdt('20'));
			const context = await browser.newContext({ viewport: DESKTOP });
			await injectPayingEthereum(context, chain, wallet);
			let page = await signIn(context);
			const problems = watchProblems(page);
			const key = await subscribe(page, services['Monthly Renewable']);
			assert.equal((await callWithKey(server.base, key, modelId)).status, 200);

			// Past the period and its 3 days of grace.
			const advanced = await fetch(server.url('/api/ops/clock/advance'), {
				method: 'POST',
				headers: { 'content-type': 'application/json' },
				body: JSON.stringify({ seconds: 33 * DAY_SECS + 60 })
			});
			assert.equal(advanced.status, 200);
			const expired = await callWithKey(server.base, key, modelId);
			assert.equal(expired.status, 403);
			assert.equal(expired.body.error.code, 'subscription_expired');

			// The session expired with the clock too: sign in again.
			await page.close();
			page = await signIn(context);
			await page.goto(server.url('/subscriptions'));
			const item = page.getByRole('article', { name: 'Monthly Renewable' });
			await textMatches(item.getByTestId('subscription-state'), /^Expired$/);
			await page.screenshot({
				path: artifactPath('desktop-subscriptions-expired.png'),
				fullPage: true
			});
			await item.getByRole('button', { name: 'Renew for $4' }).click();
			await payIn(item);
			await textMatches(
				page.getByRole('article', { name: 'Monthly Renewable' }).getByTestId('subscription-state'),
				/^Active$/
			);
			assert.equal((await callWithKey(server.base, key, modelId)).status, 200, 'the same key');
			assert.deepEqual(problems, []);
			await context.close();
		});

		test('pay-per-request credit runs out (429 insufficient_quota) and a top-up from the page restores it', async () => {
			const wallet = await chain.fundedWallet(usdt('20'));
			const context = await browser.newContext({ viewport: PHONE });
			await injectPayingEthereum(context, chain, wallet);
			const page = await signIn(context);
			const problems = watchProblems(page);
			const key = await subscribe(page, services['Per Call Renewable'], '1');
			assert.equal((await callWithKey(server.base, key, modelId)).status, 200);
			const out = await callWithKey(server.base, key, modelId);
			assert.equal(out.status, 429);
			assert.equal(out.body.error.code, 'insufficient_quota');

			await page.goto(server.url('/subscriptions'));
			const item = page.getByRole('article', { name: 'Per Call Renewable' });
			await textMatches(item.getByTestId('subscription-credit'), /^\$0 of \$1$/);
			await item.getByLabel('Add credit (USDT)').fill('2');
			await item.getByRole('button', { name: 'Top up' }).click();
			await payIn(item);
			await textMatches(
				page
					.getByRole('article', { name: 'Per Call Renewable' })
					.getByTestId('subscription-credit'),
				/^\$2 of \$3$/
			);
			await page.screenshot({
				path: artifactPath('phone-subscriptions-topped-up.png'),
				fullPage: true
			});
			assert.equal((await callWithKey(server.base, key, modelId)).status, 200, 'the same key');
			assert.deepEqual(problems, []);
			await context.close();
		});
	}
);
