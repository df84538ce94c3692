import { describe, expect, it } from 'vitest';
import { readSse, SseParser, type SseEvent } from './sse';

/** A body that arrives in exactly these chunks of bytes. */
function body(chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
	const encoder = new TextEncoder();
	return new ReadableStream({
		start(controller) {
			for (const chunk of chunks) {
				controller.enqueue(typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
			}
			controller.close();
		}
	});
}

async function all(stream: ReadableStream<Uint8Array>): Promise<SseEvent[]> {
	const events: SseEvent[] = [];
	for await (const event of readSse(stream)) {
		events.push(event);
	}
	return events;
}

describe('the server-sent events reader', () => {
	it('reads named and unnamed events, joining data lines with a newline', async () => {
		const events = await all(
			body(['event: start\ndata: {"a":1}\n\n', 'data: first\ndata: second\n\n', 'data: [DONE]\n\n'])
		);
		expect(events).toEqual([
			{ event: 'start', data: '{"a":1}' },
			{ event: 'message', data: 'first\nsecond' },
			{ event: 'message', data: '[DONE]' }
		]);
	});

	it('puts together events that chunks split anywhere, a CRLF and a UTF-8 character included', async () => {
		const text = 'event: receipt\r\ndata: {"name":"Müller €"}\r\n\r\ndata: x\r\n\r\n';
		const bytes = new TextEncoder().encode(text);
		const whole = await all(body([bytes]));
		for (let size = 1; size <= 7; size++) {
			const chunks: Uint8Array[] = [];
			for (let at = 0; at < bytes.length; at += size) {
				chunks.push(bytes.slice(at, at + size));
			}
			expect(await all(body(chunks))).toEqual(whole);
		}
		expect(whole).toEqual([
			{ event: 'receipt', data: '{"name":"Müller €"}' },
			{ event: 'message', data: 'x' }
		]);
	});

	it('accepts a lone CR as a line end, even at the end of a chunk', async () => {
		expect(await all(body(['data: a\r', '\r', 'data: b\r\r']))).toEqual([
			{ event: 'message', data: 'a' },
			{ event: 'message', data: 'b' }
		]);
	});

	it('skips comments and unknown fields, and drops only one space after the colon', async () => {
		expect(
			await all(body([': keep-alive\nid: 7\nretry: 10\nfoo: bar\ndata:  two spaces\ndata\n\n']))
		).toEqual([{ event: 'message', data: ' two spaces\n' }]);
	});

	it('dispatches nothing for an event without data, and drops an unfinished last event', async () => {
		expect(await all(body(['event: start\n\n', 'data: complete\n\n', 'data: cut off']))).toEqual([
			{ event: 'message', data: 'complete' }
		]);
	});

	it('forgets the event name after each event', () => {
		const parser = new SseParser();
		expect(parser.push('event: error\ndata: 1\n\ndata: 2\n\n')).toEqual([
			{ event: 'error', data: '1' },
			{ event: 'message', data: '2' }
		]);
	});

	it('closes the body when the reader stops early', async () => {
		let cancelled = false;
		const stream = new ReadableStream<Uint8Array>({
			pull(controller) {
				controller.enqueue(new TextEncoder().encode('data: again\n\n'));
			},
			cancel() {
				cancelled = true;
			}
		});
		for await (const event of readSse(stream)) {
			expect(event.data).toBe('again');
			break;
		}
		expect(cancelled).toBe(true);
	});
});
