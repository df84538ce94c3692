// Browser journeys of the dashboards (issue 18) through the real `aiforge` binary in headless
// Chromium, on the manual clock and a real local chain: a month is seeded through the API with
// known figures (an API subscription paid on chain, metered calls, a paid job a node runs), then
// the admin (signed in with a whitelisted wallet in the page), the creator and the node operator
// each see their chart, and the chart's data table equals the existing API's figure for the same
// thing; the node's heartbeat charts (operator's page and admin's node view) equal its samples. Screenshots at desktop and phone width go to the artifacts.
//   cd web && npm run test:e2e   (after `npm run build`, `cargo build --bins`,
//   `npm ci --prefix fixtures/chain`)
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chainSkipReason, ethers, injectPayingEthereum, startChain, usdt } from './chain.mjs';
import {
	artifactPath,
	launchBrowser,
	skipReason,
	startMockOpenAi,
	startServer,
	watchProblems
} from './support.mjs';
import { advanceClock, apiFromPage, DESKTOP, PHONE, until } from './ops-support.mjs';

const skip = skipReason() ?? chainSkipReason();
const PASSWORD = 'difference engine';
/** The month everything happens in (the manual clock starts in it). */
const MONTH = '2026-11-01';

async function ok(page, path, init = {}, status = [200, 201]) {
	const answer = await apiFromPage(page, path, init);
	assert.ok(
		status.includes(answer.status),
		`${path}: ${answer.status} ${JSON.stringify(answer.body)}`
	);
	return answer.body;
}

/**
 * The node's heartbeat charts (`heartbeat-load-…`, `heartbeat-memory-…`) hold every sample of
 * `GET /api/nodes/{id}/heartbeats`, each metric as the API's number; returns the API's samples.
 */
async function heartbeatChartsEqualTheApi(page, node) {
	const history = await ok(page, `/api/nodes/${node}/heartbeats`);
	assert.deepEqual(
		history.samples.map((s) => [s.at, s.metrics.cpu_percent, s.metrics.memory_used_mb]),
		[
			['2026-11-12T09:00:00.000000Z', 7, 1024],
			['2026-11-12T09:01:15.000000Z', 63, 3000]
		]
	);
	for (const sample of history.samples) {
		for (const [chart, key] of [
			[`heartbeat-load-${node}`, 'cpu_percent'],
			[`heartbeat-load-${node}`, 'running_jobs'],
			[`heartbeat-memory-${node}`, 'memory_used_mb'],
			[`heartbeat-memory-${node}`, 'disk_used_gb']
		]) {
			assert.equal(
				await chartCell(page, chart, sample.at, key),
				String(sample.metrics[key]),
				`${chart} ${key} at ${sample.at}`
			);
		}
	}
	const rows = await page.locator(`[data-chart="heartbeat-load-${node}"] tbody tr[data-t]`).count();
	assert.equal(rows, history.samples.length, 'one table row per sample');
	return history;
}

/** A chart's data-table cell: the figure at bucket `t` of the line `key`. */
async function chartCell(page, chart, t, key) {
	const cell = page.locator(`[data-chart="${chart}"] tr[data-t="${t}"] td[data-key="${key}"]`);
	await cell.waitFor({ timeout: 15_000 });
	return (await cell.textContent())?.trim();
}

describe('dashboards with charts', { skip: skip ?? false }, () => {
	let chain;
	let mock;
	let server;
	let browser;
	const admin = ethers.Wallet.createRandom();

	before(async () => {
		chain = await startChain();
		mock = await startMockOpenAi({ reply: 'Charted' });
		server = await startServer({
			localNode: `upstream:${mock.url}/v1#mock`,
			env: {
				...chain.serverEnv(),
				AIFORGE_ADMIN_WALLETS: admin.address,
				AIFORGE_MANUAL_CLOCK_START: '2026-11-12T09:00:00Z'
			}
		});
		browser = await launchBrowser();
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
		await mock?.stop();
		await chain?.stop();
	});

	async function walletPage(wallet) {
		const context = await browser.newContext({ viewport: DESKTOP });
		await injectPayingEthereum(context, chain, wallet);
		const page = await context.newPage();
		const problems = watchProblems(page);
		await page.goto(server.url('/signin'));
		await page.getByRole('button', { name: 'Sign in with MetaMask' }).click();
		await page.waitForURL(server.url('/account'));
		return { context, page, problems };
	}

	async function emailPage(name) {
		const context = await browser.newContext({ viewport: DESKTOP });
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

	/** Pays a payment from the chain's payer and has the server verify it (3 confirmations). */
	async function payOnChain(page, paymentId, amount) {
		const hash = await chain.transfer(chain.payer_key, chain.platform, usdt(amount));
		await chain.mine(3);
		await ok(page, '/api/payments/verify', {
			method: 'POST',
			body: JSON.stringify({ payment_id: paymentId, tx_hash: hash })
		});
	}

	/** The bytes the local node serves: its upstream card in the data dir. */
	function servedCard() {
		const name = readdirSync(server.dataDir).find((f) => /^upstream-.*\.card$/.test(f));
		assert.ok(name, 'the local node wrote its card');
		return readFileSync(join(server.dataDir, name), 'utf8');
	}

	test('the admin, a creator and a node operator see charts whose data equals the API', async () => {
		// The creator (also a node operator): a model, a $20 service, and a node.
		const creator = await emailPage('ada');
		const model = (
			await ok(creator.page, '/api/models?name=Charted%20Model', {
				method: 'POST',
				body: servedCard(),
				headers: { 'content-type': 'application/octet-stream' }
			})
		).model.id;
		await ok(creator.page, `/api/publishing/model/${model}/publish`, {
			method: 'POST',
			body: '{}'
		});
		const service = (
			await ok(creator.page, '/api/marketplace/create', {
				method: 'POST',
				body: JSON.stringify({
					model_id: model,
					name: 'Charted API',
					description: '',
					pricing: { type: 'monthly', price_per_month: '20' },
					rate_limits: {}
				})
			})
		).service.id;
		const registered = await ok(creator.page, '/api/nodes/register', {
			method: 'POST',
			body: JSON.stringify({
				name: 'rig-1',
				owner_wallet: chain.platform,
				resources: { cpu_cores: 4, memory_mb: 8192, disk_gb: 100, gpus: [], max_concurrent_jobs: 1 }
			})
		});
		const node = registered.node.id;
		const nodeApi = async (method, path, body) => {
			const response = await fetch(server.url(path), {
				method,
				headers: {
					authorization: `Bearer ${registered.node_token}`,
					'content-type': 'application/json'
				},
				body: body === undefined ? undefined : JSON.stringify(body)
			});
			return { status: response.status, body: await response.text() };
		};
		const beat = await nodeApi('POST', `/api/nodes/${node}/heartbeat`, {
			cpu_percent: 7,
			memory_used_mb: 1024,
			disk_used_gb: 3,
			running_jobs: 0
		});
		assert.equal(beat.status, 200, beat.body);
		// A minute and a bit later, another sample of the node's heartbeat metrics.
		await advanceClock(server, 75);
		const secondBeat = await nodeApi('POST', `/api/nodes/${node}/heartbeat`, {
			cpu_percent: 63,
			memory_used_mb: 3000,
			disk_used_gb: 4,
			running_jobs: 1
		});
		assert.equal(secondBeat.status, 200, secondBeat.body);

		// The consumer pays the service on chain and calls it three times; then pays a $10 job.
		const consumer = await walletPage(chain.wallet(chain.payer_key));
		const subscribed = await ok(consumer.page, `/api/marketplace/${service}/subscribe`, {
			method: 'POST',
			body: JSON.stringify({ network: 'ethereum' })
		});
		await payOnChain(consumer.page, subscribed.payment.payment_id, '20');
		const call = () =>
			fetch(server.url('/api/v1/chat/completions'), {
				method: 'POST',
				headers: {
					authorization: `Bearer ${subscribed.api_key}`,
					'content-type': 'application/json'
				},
				body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hi' }] })
			});
		// The subscription activates when the reactor has read the confirmation (a moment after
		// the verify answer): the first call is retried until the key works.
		await until('the subscription to activate', async () => (await call()).status === 200);
		for (let i = 0; i < 2; i += 1) {
			const response = await call();
			assert.equal(response.status, 200, await response.text());
		}
		const input = 'dashboards input\n';
		const blob = await ok(consumer.page, '/api/blobs', {
			method: 'POST',
			body: input,
			headers: { 'content-type': 'application/octet-stream' }
		});
		const jobId = crypto.randomUUID();
		const jobPayment = await ok(consumer.page, '/api/payments/create', {
			method: 'POST',
			body: JSON.stringify({ type: 'job', network: 'ethereum', amount: '10', reference: jobId })
		});
		await payOnChain(consumer.page, jobPayment.payment.payment_id, '10');
		await ok(consumer.page, '/api/jobs', {
			method: 'POST',
			body: JSON.stringify({
				payment_id: jobPayment.payment.payment_id,
				type: 'training',
				image: 'localhost/aiforge-job:busybox',
				command: ['sh', '-c', 'true'],
				env: {},
				inputs: [blob.blob.cid],
				needs: { cpu_cores: 1, memory_mb: 256, gpus: 0, gpu_memory_mb: 0 },
				max_runtime_secs: 600,
				price: '10'
			})
		});
		const next = await nodeApi('GET', `/api/nodes/${node}/jobs/next`);
		assert.equal(next.status, 200, next.body);
		for (const [what, body] of [
			['started', { attempt: 1 }],
			['finished', { attempt: 1, exit_code: 0 }]
		]) {
			const answer = await nodeApi('POST', `/api/nodes/${node}/jobs/${jobId}/${what}`, body);
			assert.equal(answer.status, 200, `${what}: ${answer.body}`);
		}

		// The consumer's dashboard: usage by day per subscription equals the usage route.
		const usage = await ok(
			consumer.page,
			`/api/marketplace/subscriptions/${subscribed.subscription.id}/usage`
		);
		await consumer.page.goto(server.url('/dashboard'));
		assert.equal(
			await chartCell(consumer.page, 'usage-requests', '2026-11-12', subscribed.subscription.id),
			String(usage.requests)
		);
		assert.equal(usage.requests, 3);
		await consumer.page.screenshot({ path: artifactPath('desktop-dashboard.png'), fullPage: true });
		assert.deepEqual(consumer.problems, []);
		await consumer.context.close();

		// The admin: revenue by month by type equals GET /api/revenue/monthly/2026/11.
		const adminPage = await walletPage(admin);
		const monthly = await ok(adminPage.page, '/api/revenue/monthly/2026/11');
		await adminPage.page.goto(server.url('/admin/revenue'));
		for (const line of monthly.by_type) {
			assert.equal(
				await chartCell(adminPage.page, 'revenue-by-type', MONTH, line.type),
				line.gross,
				line.type
			);
		}
		const gross = (type) => monthly.by_type.find((l) => l.type === type).gross;
		assert.equal(gross('api_subscription'), '20.000000');
		assert.equal(gross('job'), '10.000000');
		assert.equal(
			await chartCell(adminPage.page, 'platform-fees', MONTH, 'total'),
			monthly.platform_fees
		);
		await until(
			'the month figures',
			async () =>
				(await adminPage.page.locator('[data-figure="total_revenue"]').textContent())?.trim() ===
				monthly.total_revenue
		);
		await adminPage.page.screenshot({
			path: artifactPath('desktop-admin-revenue.png'),
			fullPage: true
		});
		await adminPage.page.setViewportSize(PHONE);
		await adminPage.page.screenshot({
			path: artifactPath('phone-admin-revenue.png'),
			fullPage: true
		});
		// The admin's node view draws the node's heartbeats from the same samples.
		await adminPage.page.setViewportSize(DESKTOP);
		await adminPage.page.goto(server.url(`/admin/nodes?node=${node}`));
		await heartbeatChartsEqualTheApi(adminPage.page, node);
		await adminPage.page.screenshot({
			path: artifactPath('desktop-admin-node.png'),
			fullPage: true
		});
		assert.deepEqual(adminPage.problems, []);
		await adminPage.context.close();

		// The creator's earnings by kind equal my-earnings; the node's earnings equal its payable.
		const earnings = await ok(creator.page, '/api/revenue/my-earnings?year=2026&month=11');
		await creator.page.goto(server.url('/studio/earnings'));
		assert.equal(
			await chartCell(creator.page, 'earnings-by-kind', MONTH, 'api_subscription'),
			earnings.by_month[0].api_and_sales
		);
		assert.equal(earnings.by_month[0].api_and_sales, '18.000000');
		assert.equal(await chartCell(creator.page, 'requests-by-model', '2026-11-12', model), '3');
		await creator.page.screenshot({
			path: artifactPath('desktop-studio-earnings.png'),
			fullPage: true
		});
		await creator.page.setViewportSize(PHONE);
		await creator.page.screenshot({
			path: artifactPath('phone-studio-earnings.png'),
			fullPage: true
		});

		await creator.page.setViewportSize(DESKTOP);
		const detail = await ok(creator.page, `/api/nodes/${node}`);
		await creator.page.goto(server.url('/nodes'));
		assert.equal(
			await chartCell(creator.page, `node-earnings-${node}`, MONTH, 'total'),
			detail.node.earnings.payable
		);
		assert.equal(detail.node.earnings.payable, '9.500000');
		await heartbeatChartsEqualTheApi(creator.page, node);
		assert.equal(
			(
				await creator.page.locator(`[data-node="${node}"] [data-figure="payable"]`).textContent()
			)?.trim(),
			`${detail.node.earnings.payable} USDT`
		);
		await creator.page.screenshot({ path: artifactPath('desktop-nodes.png'), fullPage: true });
		await creator.page.setViewportSize(PHONE);
		await creator.page.screenshot({ path: artifactPath('phone-nodes.png'), fullPage: true });
		assert.deepEqual(creator.problems, []);
		await creator.context.close();
	});
});
