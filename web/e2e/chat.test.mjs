// Browser journeys of the chat application through the real `aiforge` binary in headless
// Chromium (issue 15): a Free-plan user chats with the real local model (SmolLM2, streamed),
// stops, regenerates, edits into branches, reloads, checks a receipt against the recorded
// usage event, and deletes; another user gets a 404 page; a hostile model answer (from the
// workspace's mock OpenAI-compatible engine, fronted by the local node) runs nothing and loads
// nothing; a plan with a 5-request month refuses the 6th call in the chat and by API key.
//   cd web && npm run test:e2e   (after `npm run build` and
//   `cargo build -p aiforge-api -p aiforge-inference --bins`)
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import {
	artifactPath,
	launchBrowser,
	skipReason,
	startMockOpenAi,
	startServer,
	watchProblems
} from './support.mjs';

const skip = skipReason();
const PASSWORD = 'analytical engine';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
/** The real model on two cores: a whole answer can take a while. */
const ANSWER_TIMEOUT_MS = 240_000;
const JOURNEY_TIMEOUT_MS = 1_200_000;
/** The Free plan's requests a month in the plan-limit journey (a server setting). */
const PLAN_REQUESTS = 5;

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
	return ((await locator.textContent({ timeout: 5_000 }).catch(() => '')) ?? '').trim();
}

/** Email sign-up in the page, then the Free plan on the plans page. */
async function signUpOnFreePlan(server, page, name) {
	await page.goto(server.url('/register'));
	await page.getByLabel('Email').fill(`${name}@example.com`);
	await page.getByLabel('Username').fill(name);
	await page.getByLabel('Password').fill(PASSWORD);
	await page.getByRole('button', { name: 'Create account' }).click();
	await page.waitForURL(server.url('/plans'));
	await page.getByRole('button', { name: 'Start the Free plan' }).click();
	await until('the Free plan', async () =>
		/You are on the Free plan/.test(await textOf(page.getByTestId('subscription-status')))
	);
}

/** The API as the page's cookie session sees it. */
async function apiFromPage(page, path, init = {}) {
	return page.evaluate(
		async ([path, init]) => {
			const response = await fetch(path, {
				...init,
				headers: { 'x-aiforge-csrf': '1', 'content-type': 'application/json', ...init.headers }
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

/** Waits until no answer streams and the page has the server's copy (Send is back). */
async function answerFinished(page, timeoutMs = ANSWER_TIMEOUT_MS) {
	await page
		.getByRole('button', { name: 'Stop generating' })
		.waitFor({ state: 'detached', timeout: timeoutMs });
	await until(
		'the server copy of the answer',
		async () => (await page.locator('[aria-busy="true"]').count()) === 0,
		timeoutMs
	);
	await page.locator('#chat-message:not([disabled])').waitFor({ timeout: timeoutMs });
}

/** The object anywhere inside `value` that has `key`. */
function findWith(value, key) {
	if (value && typeof value === 'object') {
		if (key in value) return value;
		for (const inner of Object.values(value)) {
			const found = findWith(inner, key);
			if (found) return found;
		}
	}
	return null;
}

/** Tables of the server's SQLite database that hold `text` in some row. */
function tablesHolding(dataDir, text) {
	const script = `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
found = []
for (table,) in db.execute("select name from sqlite_master where type = 'table'"):
    for row in db.execute(f'select * from "{table}"'):
        if any(isinstance(v, str) and sys.argv[2] in v for v in row):
            found.append(table)
            break
print("\\n".join(found))
`;
	return execFileSync('python3', ['-c', script, `${dataDir}/aiforge.db`, text], {
		encoding: 'utf8'
	})
		.split('\n')
		.filter(Boolean);
}

describe('the chat with the real local model', { skip: skip ?? false }, () => {
	let server;
	let browser;

	before(async () => {
		server = await startServer({ localNode: 'smollm2' });
		browser = await launchBrowser();
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
	});

	test(
		'sign-up, Free plan, streamed answer, stop, regenerate, edit into branches, reload, receipt = recorded usage, 404 for another user, delete',
		{ timeout: JOURNEY_TIMEOUT_MS },
		async () => {
			const marker = `zebra${Date.now()}`;
			const context = await browser.newContext({ viewport: DESKTOP });
			const page = await context.newPage();
			const problems = watchProblems(page);
			await signUpOnFreePlan(server, page, 'lovelace');

			await page.goto(server.url('/chat'));
			await page.getByRole('heading', { name: 'New chat' }).waitFor();
			await until('a plan model in the picker', async () =>
				/Free plan/.test(await textOf(page.getByTestId('model-payer')))
			);
			const input = page.getByLabel('Message', { exact: true });
			const first = `${marker} Tell me a long story about a lighthouse keeper and the sea.`;
			await input.fill(first);
			await input.press('Enter');
			await page.waitForURL(/\/chat\/[^/?#]+$/);
			const conversationId = new URL(page.url()).pathname.split('/').pop();

			// Streamed: the answer grows while the stop button is still there.
			const answers = page.getByTestId('assistant-message');
			const stop = page.getByRole('button', { name: 'Stop generating' });
			await stop.waitFor({ timeout: ANSWER_TIMEOUT_MS });
			const markdown = answers.last().locator('.markdown');
			const early = await until(
				'the first words',
				async () => (await stop.isVisible()) && (await textOf(markdown)),
				ANSWER_TIMEOUT_MS
			);
			await until(
				'more words while streaming',
				async () => (await stop.isVisible()) && (await textOf(markdown)).length > early.length,
				ANSWER_TIMEOUT_MS
			);
			await stop.click();
			await answers.last().getByTestId('stopped').waitFor({ timeout: 30_000 });
			await answerFinished(page);

			// The server kept the stopped answer with what was delivered, billed by its receipt.
			let saved = await apiFromPage(page, `/api/conversations/${conversationId}`);
			assert.equal(saved.status, 200);
			const stopped = saved.body.messages.find((m) => m.role === 'assistant');
			assert.equal(stopped.finish_reason, 'cancelled');
			assert.ok(stopped.content.length > 0, 'what was delivered is kept');
			assert.ok(stopped.receipt, 'a stopped answer has its receipt');
			assert.ok(stopped.receipt.completion_tokens > 0);

			// Shorter answers from here on: the conversation's own settings.
			await page.getByText('Settings', { exact: true }).click();
			await page.getByLabel('Most tokens per answer').fill('12');
			await page.getByLabel('System prompt').fill('You answer briefly.');
			await page.getByRole('button', { name: 'Save settings' }).click();
			await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
			saved = await apiFromPage(page, `/api/conversations/${conversationId}`);
			assert.equal(saved.body.max_tokens, 12);
			assert.equal(saved.body.system_prompt, 'You answer briefly.');

			// Regenerate: a second answer beside the stopped one.
			await answers.last().getByRole('button', { name: 'Regenerate' }).click();
			await answerFinished(page);
			await until(
				'answer 2/2',
				async () => (await textOf(answers.last().getByTestId('branch-position'))) === '2/2'
			);
			const regenerated = await textOf(markdown);
			assert.ok(regenerated.length > 0);

			// A second message, then edit the first one: a new branch from the root.
			await input.fill('And what happened next?');
			await input.press('Enter');
			await answerFinished(page);
			assert.equal(await page.getByTestId('user-message').count(), 2);

			const users = page.getByTestId('user-message');
			await users.first().getByRole('button', { name: 'Edit' }).click();
			const edited = `${marker} Name three colours.`;
			await users.first().getByLabel('Edit your message').fill(edited);
			await users.first().getByRole('button', { name: 'Save and send' }).click();
			await answerFinished(page);
			assert.equal(await users.count(), 1, 'the edited branch has only its own message');
			assert.equal(await textOf(users.first().locator('.user-text')), edited);
			assert.equal(await textOf(users.first().getByTestId('branch-position')), '2/2');

			// Back to the first branch: its messages and its newest answer, then forward again.
			await users.first().getByRole('button', { name: 'Previous version of this message' }).click();
			assert.equal(await textOf(users.first().locator('.user-text')), first);
			assert.equal(await users.count(), 2, 'the first branch keeps its second message');
			assert.equal(await textOf(answers.first().getByTestId('branch-position')), '2/2');
			await answers
				.first()
				.getByRole('button', { name: 'Previous version of this answer' })
				.click();
			await answers.first().getByTestId('stopped').waitFor();
			await users.first().getByRole('button', { name: 'Next version of this message' }).click();
			assert.equal(await textOf(users.first().locator('.user-text')), edited);

			// A reload shows the same conversation and its branches (newest first).
			await page.reload();
			await page.getByTestId('user-message').first().waitFor();
			assert.equal(await textOf(users.first().locator('.user-text')), edited);
			assert.equal(await textOf(users.first().getByTestId('branch-position')), '2/2');
			await users.first().getByRole('button', { name: 'Previous version of this message' }).click();
			assert.equal(await textOf(users.first().locator('.user-text')), first);
			assert.equal(await users.count(), 2);
			assert.equal(await textOf(answers.first().getByTestId('branch-position')), '2/2');

			// The receipt of the last answer equals its metering event in the event log.
			const receipt = answers.last().getByTestId('receipt');
			await receipt.locator('summary').click();
			const shown = {
				prompt: Number(await textOf(receipt.getByTestId('receipt-prompt-tokens'))),
				completion: Number(await textOf(receipt.getByTestId('receipt-completion-tokens'))),
				position: Number(await textOf(receipt.getByTestId('receipt-position'))),
				request: await textOf(receipt.getByTestId('receipt-request-id'))
			};
			assert.ok(shown.prompt > 0 && shown.completion > 0, JSON.stringify(shown));
			const [event] = await server.events({ from: shown.position, to: shown.position });
			assert.ok(event, `an event at position ${shown.position}`);
			assert.equal(event.position, shown.position);
			const metered = findWith(JSON.parse(event.payload), 'prompt_tokens');
			assert.ok(metered, `a metering event: ${event.event_type}`);
			assert.equal(metered.prompt_tokens, shown.prompt);
			assert.equal(metered.completion_tokens, shown.completion);
			assert.equal(metered.request_id, shown.request);
			// Money is a string in the receipt, as in the event.
			assert.match(await textOf(receipt.getByTestId('receipt-cost')), /^\d+(\.\d+)?$/);
			// Chat text stays out of the immutable log: metering records tokens, never text.
			const log = JSON.stringify(await server.events());
			assert.equal(log.includes(marker), false, 'no chat text in the event log');

			// Screenshots of the conversation at desktop and phone width.
			// The chat is an app-height view whose messages scroll inside it: no full-page shots.
			await page.screenshot({ path: artifactPath('desktop-chat-conversation.png') });
			await page.setViewportSize(PHONE);
			const overflow = await page.evaluate(
				() => document.documentElement.scrollWidth - window.innerWidth
			);
			assert.ok(overflow <= 0, `the chat scrolls sideways by ${overflow}px at phone width`);
			await page.screenshot({ path: artifactPath('phone-chat-conversation.png') });
			await page.getByRole('button', { name: 'Conversations' }).click();
			await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
			await page.screenshot({ path: artifactPath('phone-chat-sidebar.png'), fullPage: true });
			await page.setViewportSize(DESKTOP);

			// Every control is labelled; the sidebar works from the keyboard.
			const unlabelled = await page.evaluate(() =>
				[...document.querySelectorAll('input, select, textarea, button, summary')]
					.filter(
						(el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent?.trim())
					)
					.map((el) => el.outerHTML)
			);
			assert.deepEqual(unlabelled, []);
			await page.goto(server.url('/chat'));
			const search = page.getByLabel('Search conversations');
			await search.fill(marker);
			const list = page.getByRole('navigation', { name: 'Conversations' });
			await until('the search hit', async () => (await list.getByRole('link').count()) === 1);
			await search.fill('no such words anywhere');
			await list.getByText('No conversation matches.').waitFor();
			await search.fill('');
			await until('the whole list', async () => (await list.getByRole('link').count()) === 1);
			await search.focus();
			await page.keyboard.press('Tab');
			await page.keyboard.press('Enter');
			await page.waitForURL(server.url(`/chat/${conversationId}`));

			// Rename, and both exports.
			await page.getByLabel(/^Actions for /).click();
			await page.getByRole('button', { name: 'Rename' }).click();
			await page.getByLabel(/^New title for /).fill('Lighthouse stories');
			await page.getByRole('button', { name: 'Save', exact: true }).click();
			await list.getByRole('link', { name: 'Lighthouse stories' }).waitFor();
			await page.getByRole('heading', { name: 'Lighthouse stories' }).waitFor();
			await page.getByLabel(/^Actions for /).click();
			const [markdownDownload] = await Promise.all([
				page.waitForEvent('download'),
				page.getByRole('link', { name: 'Export as Markdown' }).click()
			]);
			const exportedMarkdown = readFileSync(await markdownDownload.path(), 'utf8');
			assert.ok(exportedMarkdown.includes(edited), 'the Markdown export holds the messages');
			await page.getByLabel(/^Actions for /).click();
			const [jsonDownload] = await Promise.all([
				page.waitForEvent('download'),
				page.getByRole('link', { name: 'Export as JSON' }).click()
			]);
			const exportedJson = JSON.parse(readFileSync(await jsonDownload.path(), 'utf8'));
			assert.ok(JSON.stringify(exportedJson).includes(edited), 'the JSON export too');

			// Another person: the page is a 404 page, the API a 404.
			const other = await browser.newContext({ viewport: DESKTOP });
			const otherPage = await other.newPage();
			await signUpOnFreePlan(server, otherPage, 'babbage');
			await otherPage.goto(server.url(`/chat/${conversationId}`));
			await until(
				'the 404 page',
				async () => (await textOf(otherPage.getByTestId('error-status'))) === '404'
			);
			await otherPage.getByRole('heading', { name: 'Not found' }).waitFor();
			assert.equal(await otherPage.getByTestId('user-message').count(), 0);
			assert.equal(await otherPage.getByText(marker).count(), 0, 'nothing of it shows');
			const foreign = await apiFromPage(otherPage, `/api/conversations/${conversationId}`);
			assert.equal(foreign.status, 404);
			await otherPage.screenshot({ path: artifactPath('desktop-chat-404.png'), fullPage: true });
			await other.close();

			// Delete: gone from the list, from the API and from every table of the database.
			assert.ok(tablesHolding(server.dataDir, marker).length > 0, 'the text was stored');
			await page.getByLabel(/^Actions for /).click();
			await page.getByRole('button', { name: 'Delete' }).click();
			await page
				.getByRole('group', { name: /^Delete / })
				.getByRole('button', { name: 'Delete' })
				.click();
			await page.waitForURL(server.url('/chat'));
			await list.getByText('No conversations yet.').waitFor();
			const gone = await apiFromPage(page, `/api/conversations/${conversationId}`);
			assert.equal(gone.status, 404);
			assert.deepEqual(tablesHolding(server.dataDir, marker), [], 'no row keeps its text');

			assert.deepEqual(problems, [], 'no script error, no CSP violation');
			await context.close();
		}
	);
});

describe('the chat against a fixed-answer engine', { skip: skip ?? false }, () => {
	let server;
	let browser;
	let mock;
	let evil;
	const evilHits = [];

	before(async () => {
		// Another origin the hostile answer points at: any request it gets is a failure.
		evil = createServer((request, response) => {
			evilHits.push(request.url);
			response.setHeader('content-type', 'image/png');
			response.end();
		});
		await new Promise((done) => evil.listen(0, '127.0.0.1', done));
		const evilOrigin = `http://127.0.0.1:${evil.address().port}`;
		const reply = [
			'Here: <img src=x onerror=alert(1)> then <script>alert(2)</script>',
			'and [click me](javascript:alert(3)) and a picture',
			`![pixel](${evilOrigin}/markdown.png) and <img src="${evilOrigin}/raw.png">`,
			'and a plain word: harmless.'
		].join(' ');
		mock = await startMockOpenAi({ reply });
		server = await startServer({
			localNode: `upstream:${mock.url}/v1#mock`,
			env: { AIFORGE_PLAN_LIMITS: `free=${PLAN_REQUESTS}/1000000` }
		});
		browser = await launchBrowser();
	});

	after(async () => {
		await browser?.close();
		await server?.stop();
		await mock?.stop();
		evil?.close();
	});

	test('a hostile answer runs nothing and loads nothing', { timeout: 300_000 }, async () => {
		const context = await browser.newContext({ viewport: DESKTOP });
		const page = await context.newPage();
		const problems = watchProblems(page);
		const dialogs = [];
		page.on('dialog', async (dialog) => {
			dialogs.push(dialog.message());
			await dialog.dismiss();
		});
		await signUpOnFreePlan(server, page, 'mallory');
		await page.goto(server.url('/chat'));
		await until('a plan model', async () =>
			/Free plan/.test(await textOf(page.getByTestId('model-payer')))
		);
		const requests = [];
		page.on('request', (request) => requests.push(request.url()));

		const input = page.getByLabel('Message', { exact: true });
		await input.fill('Show me something.');
		await input.press('Enter');
		await page.waitForURL(/\/chat\/[^/?#]+$/);
		await answerFinished(page, 60_000);
		const answer = page.getByTestId('assistant-message').last();
		const text = await textOf(answer.locator('.markdown'));
		assert.match(text, /harmless\./, 'the whole answer arrived');
		assert.ok(text.includes('<img src=x onerror=alert(1)>'), 'raw HTML is shown as text');
		assert.ok(text.includes('<script>alert(2)</script>'));
		assert.ok(text.includes('image not loaded'), 'an image is a note');
		assert.equal(await answer.locator('img, script, iframe, [onerror]').count(), 0);
		const link = answer.getByText('click me');
		assert.equal(await link.getAttribute('href'), null, 'the javascript: link has no address');
		await link.click();
		await page.reload();
		await page.getByTestId('assistant-message').last().locator('.markdown').waitFor();

		assert.deepEqual(dialogs, [], 'no script ran');
		assert.deepEqual(evilHits, [], 'nothing was fetched from the other origin');
		const foreign = requests.filter(
			(url) => !url.startsWith(server.base) || /\/x$|\.png$/.test(new URL(url).pathname)
		);
		assert.deepEqual(foreign, [], 'no request for the images');
		assert.deepEqual(problems, [], 'the CSP had nothing to refuse either');
		await context.close();
	});

	test(
		`a plan with a ${PLAN_REQUESTS}-request month refuses the next call in the chat and by API key`,
		{ timeout: 300_000 },
		async () => {
			const context = await browser.newContext({ viewport: DESKTOP });
			await context.grantPermissions(['clipboard-read', 'clipboard-write'], {
				origin: server.base
			});
			const page = await context.newPage();
			const problems = watchProblems(page);
			await signUpOnFreePlan(server, page, 'hopper');

			// The platform API key: made on the account page, shown once, copied.
			await page.goto(server.url('/account'));
			await page.getByTestId('api-key-status').filter({ hasText: 'no platform API key' }).waitFor();
			await page.getByRole('button', { name: 'Create an API key' }).click();
			const key = await page.getByTestId('api-key-value').inputValue();
			assert.match(key, /^aiforge_/);
			await page.getByRole('button', { name: 'Copy', exact: true }).click();
			assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
			const prefix = await textOf(page.getByTestId('api-key-prefix'));
			assert.ok(prefix.length > 0 && !prefix.includes(key), 'only a prefix stays shown');
			await page.screenshot({ path: artifactPath('desktop-account-api-key.png'), fullPage: true });
			await page.reload();
			await textOf(page.getByTestId('api-key-prefix'));
			assert.equal(await page.getByTestId('api-key-value').count(), 0, 'the key is shown once');

			const v1 = (path, body) =>
				fetch(server.url(`/api/v1${path}`), {
					method: body ? 'POST' : 'GET',
					headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
					body: body ? JSON.stringify(body) : undefined
				});
			const models = await (await v1('/models')).json();
			const model = models.data?.[0]?.id;
			assert.ok(model, `the key lists the plan's models: ${JSON.stringify(models)}`);
			const call = () =>
				v1('/chat/completions', { model, messages: [{ role: 'user', content: 'hi' }] });

			// Three calls in the chat and two by key use the month's five requests.
			await page.goto(server.url('/chat'));
			await until('a plan model', async () =>
				/Free plan/.test(await textOf(page.getByTestId('model-payer')))
			);
			const input = page.getByLabel('Message', { exact: true });
			for (let i = 1; i <= 3; i++) {
				await input.fill(`message ${i}`);
				await input.press('Enter');
				await page.waitForURL(/\/chat\/[^/?#]+$/);
				await answerFinished(page, 60_000);
				assert.equal(await page.getByTestId('assistant-message').count(), i);
			}
			for (let i = 0; i < PLAN_REQUESTS - 3; i++) {
				const answer = await call();
				assert.equal(answer.status, 200, await answer.text());
			}

			// The sixth, in the chat: refused in words, and the text comes back to send later.
			await input.fill('one too many');
			await input.press('Enter');
			const error = page.getByTestId('chat-error');
			await error.waitFor();
			assert.equal(await error.getAttribute('data-code'), 'insufficient_quota');
			assert.match(await textOf(error), /quota is used up/);
			assert.equal(await input.inputValue(), 'one too many');
			assert.equal(await page.getByTestId('assistant-message').count(), 3, 'no answer was made');
			await page.screenshot({ path: artifactPath('desktop-chat-quota.png') });

			// And by key.
			const refused = await call();
			assert.equal(refused.status, 429);
			assert.equal((await refused.json()).error.code, 'insufficient_quota');

			// The plans page counts them exactly.
			await page.goto(server.url('/plans'));
			await until(
				'the usage',
				async () =>
					(await textOf(page.getByTestId('usage-requests'))) ===
					`${PLAN_REQUESTS} of ${PLAN_REQUESTS}`
			);
			await page.screenshot({ path: artifactPath('desktop-plans-usage.png'), fullPage: true });
			await page.setViewportSize(PHONE);
			await page.screenshot({ path: artifactPath('phone-plans-usage.png'), fullPage: true });
			await page.setViewportSize(DESKTOP);

			// Regenerating the key refuses the old one at once.
			await page.goto(server.url('/account'));
			await page.getByRole('button', { name: 'Regenerate…' }).click();
			await page.getByRole('button', { name: 'Regenerate the key' }).click();
			const fresh = await page.getByTestId('api-key-value').inputValue();
			assert.notEqual(fresh, key);
			assert.equal((await call()).status, 401, 'the old key is refused');
			const withFresh = await fetch(server.url('/api/v1/models'), {
				headers: { authorization: `Bearer ${fresh}` }
			});
			assert.equal(withFresh.status, 200, 'the new key works');
			assert.deepEqual(problems, []);
			await context.close();
		}
	);
});
