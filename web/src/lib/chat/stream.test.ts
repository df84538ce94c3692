import { afterEach, describe, expect, it, vi } from 'vitest';
import { CSRF_HEADER } from '$lib/api';
import { GatewayError, postMessage, retryAfterSeconds, type ChatStreamEvent } from './stream';

const user = {
	id: 'u1',
	parent_id: null,
	role: 'user',
	content: 'hi',
	created_at: '2026-12-01T00:00:00Z'
};

function sse(text: string, status = 200): Response {
	return new Response(text, { status, headers: { 'content-type': 'text/event-stream' } });
}

async function events(stream: AsyncGenerator<ChatStreamEvent>): Promise<ChatStreamEvent[]> {
	const seen: ChatStreamEvent[] = [];
	for await (const event of stream) {
		seen.push(event);
	}
	return seen;
}

function chunk(content: string | null): string {
	return `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: content === null ? {} : { content } }] })}\n\n`;
}

describe('posting a chat message', () => {
	afterEach(() => {
		vi.unstubAllGlobals();
	});

	it('posts with the CSRF header and turns the stream into start, deltas, receipt and done', async () => {
		const receipt = { request_id: 'r1', cost: '0.000120', prompt_tokens: 3 };
		const fetch = vi.fn(async () =>
			sse(
				`event: start\ndata: ${JSON.stringify({ user_message: user, assistant_message_id: 'a1' })}\n\n` +
					chunk(null) +
					chunk('Hel') +
					chunk('lo') +
					`event: receipt\ndata: ${JSON.stringify(receipt)}\n\n` +
					'data: [DONE]\n\n' +
					chunk('after the end')
			)
		);
		vi.stubGlobal('fetch', fetch);
		const controller = new AbortController();
		const stream = await postMessage('c/1', { parent_id: null, content: 'hi' }, controller.signal);
		expect(await events(stream)).toEqual([
			{ type: 'start', userMessage: user, assistantMessageId: 'a1' },
			{ type: 'delta', content: 'Hel' },
			{ type: 'delta', content: 'lo' },
			{ type: 'receipt', receipt },
			{ type: 'done' }
		]);
		const [path, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
		expect(path).toBe('/api/conversations/c%2F1/messages');
		expect(init.method).toBe('POST');
		expect((init.headers as Record<string, string>)[CSRF_HEADER]).toBe('1');
		expect(init.signal).toBe(controller.signal);
		expect(JSON.parse(init.body as string)).toEqual({ parent_id: null, content: 'hi' });
		// The receipt's money stays the server's string.
		expect(receipt.cost).toBe('0.000120');
	});

	it('reports a mid-stream failure as an error event with its code', async () => {
		vi.stubGlobal(
			'fetch',
			vi.fn(async () =>
				sse(
					chunk('partial') +
						`event: error\ndata: ${JSON.stringify({ error: { message: 'the node went away', type: 'server_error', code: 'node_lost' } })}\n\n` +
						'data: [DONE]\n\n'
				)
			)
		);
		const seen = await events(
			await postMessage('c1', { parent_id: 'u1' }, new AbortController().signal)
		);
		expect(seen[0]).toEqual({ type: 'delta', content: 'partial' });
		expect(seen[1]?.type).toBe('error');
		const error = (seen[1] as { error: GatewayError }).error;
		expect(error).toBeInstanceOf(GatewayError);
		expect(error.code).toBe('node_lost');
		expect(error.message).toBe('the node went away');
	});

	it('throws a refusal before the stream with its status, code and Retry-After', async () => {
		vi.stubGlobal(
			'fetch',
			vi.fn(
				async () =>
					new Response(
						JSON.stringify({
							error: { message: 'slow down', type: 'rate_limit', code: 'rate_limit_exceeded' }
						}),
						{ status: 429, headers: { 'content-type': 'application/json', 'retry-after': '17' } }
					)
			)
		);
		const error = await postMessage(
			'c1',
			{ parent_id: null, content: 'x' },
			new AbortController().signal
		).catch((e: unknown) => e);
		expect(error).toBeInstanceOf(GatewayError);
		expect(error).toMatchObject({ status: 429, code: 'rate_limit_exceeded', retryAfterSecs: 17 });
	});

	it('refuses a stream that is not JSON where JSON is due', async () => {
		vi.stubGlobal(
			'fetch',
			vi.fn(async () => sse('event: start\ndata: {not json\n\n'))
		);
		const stream = await postMessage('c1', { parent_id: null }, new AbortController().signal);
		await expect(events(stream)).rejects.toMatchObject({ code: 'bad_stream' });
	});

	it('an aborted fetch rejects as an abort, not as a network error', async () => {
		const controller = new AbortController();
		vi.stubGlobal(
			'fetch',
			vi.fn(async (_path: string, init: RequestInit) => {
				init.signal?.throwIfAborted();
				return sse('');
			})
		);
		controller.abort();
		const error = await postMessage('c1', { parent_id: null }, controller.signal).catch(
			(e: unknown) => e
		);
		expect(error).not.toBeInstanceOf(GatewayError);
		expect((error as Error).name).toBe('AbortError');
	});

	it('reads Retry-After as seconds or as a date', () => {
		expect(retryAfterSeconds('120')).toBe(120);
		expect(retryAfterSeconds(null)).toBeNull();
		expect(retryAfterSeconds('soon')).toBeNull();
		const now = Date.parse('2026-12-03T08:00:00Z');
		expect(retryAfterSeconds('Thu, 03 Dec 2026 08:00:30 GMT', now)).toBe(30);
	});
});
