/**
 * Posting a chat message and reading its answer as it streams
 * (`POST /api/conversations/{id}/messages`, served by the chat routes of api/).
 * The answer is server-sent events: `start` (the user message and the answer's id), OpenAI
 * `chat.completion.chunk`s, a `receipt`, an `error` when the answer fails midway, `[DONE]`.
 * The stop button aborts the fetch through the caller's AbortSignal; the server keeps and bills
 * what was delivered.
 */
import { CSRF_HEADER, type Message, type Receipt } from '$lib/api';
import { readSse, type SseEvent } from './sse';

/** A gateway refusal or failure, with what the page needs to explain it. */
export class GatewayError extends Error {
	readonly status: number;
	readonly code: string;
	/** Seconds to wait before trying again (`Retry-After`), when the server said. */
	readonly retryAfterSecs: number | null;

	constructor(status: number, code: string, message: string, retryAfterSecs: number | null = null) {
		super(message);
		this.name = 'GatewayError';
		this.status = status;
		this.code = code;
		this.retryAfterSecs = retryAfterSecs;
	}
}

export type ChatStreamEvent =
	| { type: 'start'; userMessage: Message; assistantMessageId: string }
	| { type: 'delta'; content: string }
	| { type: 'receipt'; receipt: Receipt }
	| { type: 'error'; error: GatewayError }
	| { type: 'done' };

/** `parent_id` and `content` as the contract has them; no content regenerates. */
export interface MessageRequest {
	parent_id: string | null;
	content?: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === 'object' && value !== null;
}

function parseJson(data: string, what: string): unknown {
	try {
		return JSON.parse(data);
	} catch {
		throw new GatewayError(0, 'bad_stream', `The server sent an unreadable ${what}.`);
	}
}

/** `Retry-After` in seconds (a delay, or an HTTP date measured against `now`). */
export function retryAfterSeconds(value: string | null, now = Date.now()): number | null {
	if (!value) {
		return null;
	}
	const trimmed = value.trim();
	if (/^\d+$/.test(trimmed)) {
		return Number(trimmed);
	}
	const at = Date.parse(trimmed);
	return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

/** The error of a JSON body in the platform's or OpenAI's shape. */
export function gatewayErrorFrom(
	status: number,
	body: unknown,
	retryAfter: number | null = null
): GatewayError {
	const error = isRecord(body) && isRecord(body.error) ? body.error : undefined;
	const code =
		typeof error?.code === 'string'
			? error.code
			: typeof error?.type === 'string'
				? error.type
				: `http_${status}`;
	const message =
		typeof error?.message === 'string' ? error.message : `The server answered ${status}.`;
	return new GatewayError(status, code, message, retryAfter);
}

/** One server-sent event of the chat stream, as the page's event. */
export function chatEvent(sse: SseEvent): ChatStreamEvent | null {
	switch (sse.event) {
		case 'start': {
			const start = parseJson(sse.data, 'start event');
			if (
				!isRecord(start) ||
				!isRecord(start.user_message) ||
				typeof start.assistant_message_id !== 'string'
			) {
				throw new GatewayError(0, 'bad_stream', 'The server sent a start event without its ids.');
			}
			return {
				type: 'start',
				userMessage: start.user_message as unknown as Message,
				assistantMessageId: start.assistant_message_id
			};
		}
		case 'receipt':
			return { type: 'receipt', receipt: parseJson(sse.data, 'receipt') as Receipt };
		case 'error':
			return { type: 'error', error: gatewayErrorFrom(0, parseJson(sse.data, 'error event')) };
		case 'message': {
			if (sse.data.trim() === '[DONE]') {
				return { type: 'done' };
			}
			const chunk = parseJson(sse.data, 'chunk');
			const choices = isRecord(chunk) && Array.isArray(chunk.choices) ? chunk.choices : [];
			const first: unknown = choices[0];
			const delta = isRecord(first) && isRecord(first.delta) ? first.delta : undefined;
			const content = typeof delta?.content === 'string' ? delta.content : '';
			return content ? { type: 'delta', content } : null;
		}
		default:
			// An event this page does not know (a later server's addition) is skipped.
			return null;
	}
}

/** The events of a stream of server-sent events. */
export async function* chatEvents(sse: AsyncIterable<SseEvent>): AsyncGenerator<ChatStreamEvent> {
	for await (const event of sse) {
		const chatEventOf = chatEvent(event);
		if (chatEventOf) {
			yield chatEventOf;
			if (chatEventOf.type === 'done') {
				return;
			}
		}
	}
}

/**
 * Posts the message; a refusal before the stream throws a GatewayError (with its status, code
 * and Retry-After), an accepted one yields the stream's events.
 */
export async function postMessage(
	conversationId: string,
	request: MessageRequest,
	signal: AbortSignal
): Promise<AsyncGenerator<ChatStreamEvent>> {
	let response: Response;
	try {
		response = await fetch(`/api/conversations/${encodeURIComponent(conversationId)}/messages`, {
			method: 'POST',
			headers: {
				Accept: 'text/event-stream',
				'Content-Type': 'application/json',
				[CSRF_HEADER]: '1'
			},
			credentials: 'same-origin',
			body: JSON.stringify(request),
			signal
		});
	} catch (e) {
		if (signal.aborted) {
			throw e;
		}
		throw new GatewayError(0, 'network_error', 'The server cannot be reached. Try again.');
	}
	const type = response.headers.get('content-type') ?? '';
	if (!response.ok || !type.includes('text/event-stream') || !response.body) {
		const text = await response.text().catch(() => '');
		let body: unknown = undefined;
		try {
			body = text ? JSON.parse(text) : undefined;
		} catch {
			body = undefined;
		}
		const retry = retryAfterSeconds(response.headers.get('retry-after'));
		if (response.ok) {
			throw new GatewayError(response.status, 'bad_stream', 'The server did not stream an answer.');
		}
		throw gatewayErrorFrom(response.status, body, retry);
	}
	return chatEvents(readSse(response.body));
}
