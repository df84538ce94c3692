/**
 * A reader of `text/event-stream` bodies, for streams that a `fetch` opened (EventSource cannot
 * POST). It follows the WHATWG "server-sent events" parsing rules: lines end with CRLF, LF or CR
 * (also when a chunk splits a CRLF), `data` lines of one event join with "\n", one space after
 * the colon is dropped, lines starting with ":" are comments, a blank line dispatches the event,
 * and an event left unfinished when the stream ends is dropped.
 */

export interface SseEvent {
	/** The `event:` field, or "message" when the event named none. */
	event: string;
	data: string;
}

/** The longest line accepted: a stream that never ends a line must not grow memory forever. */
export const SSE_LINE_CHARS_MAX = 4 * 1024 * 1024;

export class SseError extends Error {
	constructor(message: string) {
		super(message);
		this.name = 'SseError';
	}
}

/** Splits text into complete lines, keeping an unfinished tail for the next chunk. */
class LineSplitter {
	private buffer = '';

	/** Lines completed by this chunk; `end` flushes a final unterminated line. */
	push(chunk: string, end = false): string[] {
		this.buffer += chunk;
		const lines: string[] = [];
		let start = 0;
		for (let i = 0; i < this.buffer.length; i++) {
			const c = this.buffer[i];
			if (c === '\n') {
				lines.push(this.buffer.slice(start, i));
				start = i + 1;
			} else if (c === '\r') {
				if (i + 1 === this.buffer.length && !end) {
					// A CR at the end of a chunk may be the first half of a CRLF: wait for more.
					break;
				}
				lines.push(this.buffer.slice(start, i));
				if (this.buffer[i + 1] === '\n') {
					i++;
				}
				start = i + 1;
			}
		}
		this.buffer = this.buffer.slice(start);
		if (this.buffer.length > SSE_LINE_CHARS_MAX) {
			throw new SseError(`an event-stream line is longer than ${SSE_LINE_CHARS_MAX} characters`);
		}
		if (end && this.buffer.length > 0) {
			lines.push(this.buffer);
			this.buffer = '';
		}
		return lines;
	}
}

/** Gathers fields line by line and hands out each event at its blank line. */
export class SseParser {
	private lines = new LineSplitter();
	private eventName = '';
	private data: string[] = [];
	private hasData = false;

	/** Events completed by this chunk of text. */
	push(chunk: string): SseEvent[] {
		return this.take(this.lines.push(chunk));
	}

	/** The stream ended: an event without its blank line is dropped, as the standard says. */
	end(): SseEvent[] {
		const events = this.take(this.lines.push('', true));
		this.reset();
		return events;
	}

	private take(lines: string[]): SseEvent[] {
		const events: SseEvent[] = [];
		for (const line of lines) {
			const event = this.line(line);
			if (event) {
				events.push(event);
			}
		}
		return events;
	}

	private reset() {
		this.eventName = '';
		this.data = [];
		this.hasData = false;
	}

	private line(line: string): SseEvent | null {
		if (line === '') {
			const event = this.hasData
				? { event: this.eventName || 'message', data: this.data.join('\n') }
				: null;
			this.reset();
			return event;
		}
		if (line.startsWith(':')) {
			return null;
		}
		const colon = line.indexOf(':');
		const field = colon === -1 ? line : line.slice(0, colon);
		let value = colon === -1 ? '' : line.slice(colon + 1);
		if (value.startsWith(' ')) {
			value = value.slice(1);
		}
		if (field === 'event') {
			this.eventName = value;
		} else if (field === 'data') {
			this.data.push(value);
			this.hasData = true;
		}
		// `id` and `retry` matter to EventSource's reconnection only; other fields are ignored.
		return null;
	}
}

/** The events of a response body, as they arrive. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
	const reader = body.getReader();
	const decoder = new TextDecoder();
	const parser = new SseParser();
	let finished = false;
	try {
		for (;;) {
			const { done, value } = await reader.read();
			if (done) {
				finished = true;
				yield* parser.push(decoder.decode());
				yield* parser.end();
				return;
			}
			yield* parser.push(decoder.decode(value, { stream: true }));
		}
	} finally {
		if (!finished) {
			// The reader stopped early (an error event, a bad line): close the connection.
			await reader.cancel().catch(() => undefined);
		}
		reader.releaseLock();
	}
}
