/**
 * What the page says for each gateway error: a sentence for a person, with what to do next.
 * The codes are the gateway's (api/src/gateway, the OpenAI-compatible error shape); an unknown
 * code shows the server's own message.
 */
import { ApiError } from '$lib/api';
import { GatewayError } from './stream';

export interface ChatProblem {
	code: string;
	title: string;
	detail: string;
	/** When the person may try again, for a rate limit. */
	retryAt: Date | null;
	/** A page that helps (the plans page for a used-up quota). */
	link: { href: string; label: string } | null;
}

function seconds(n: number): string {
	return n === 1 ? '1 second' : `${n} seconds`;
}

export function explainChatError(error: unknown, now: number = Date.now()): ChatProblem {
	if (!(error instanceof GatewayError) && !(error instanceof ApiError)) {
		return {
			code: 'unknown',
			title: 'Something went wrong.',
			detail: error instanceof Error ? error.message : 'Try again.',
			retryAt: null,
			link: null
		};
	}
	const retryAfter = error instanceof GatewayError ? error.retryAfterSecs : null;
	const base = { code: error.code, detail: error.message, retryAt: null, link: null };
	switch (error.code) {
		case 'insufficient_quota':
			return {
				...base,
				title: 'This month’s quota is used up.',
				detail: `${error.message} Your plan’s requests or tokens for this month are all used; they renew with the next period, or a larger plan gives more.`,
				link: { href: '/plans', label: 'See your plan’s usage' }
			};
		case 'rate_limit_exceeded': {
			const retryAt = retryAfter === null ? null : new Date(now + retryAfter * 1000);
			return {
				...base,
				title:
					retryAfter === null
						? 'Too many requests: wait a moment and try again.'
						: `Too many requests: try again in ${seconds(retryAfter)}.`,
				retryAt
			};
		}
		case 'no_node_available':
			return {
				...base,
				title: 'No node is serving this model right now.',
				detail: `${error.message} Try again in a moment, or pick another model.`
			};
		case 'node_lost':
			return {
				...base,
				title: 'The node answering was lost mid-answer.',
				detail: `${error.message} What arrived is kept and only that is billed; regenerate to try again.`
			};
		case 'server_overloaded':
			return {
				...base,
				title: 'The platform is busy: try again in a moment.'
			};
		case 'model_not_found':
			return { ...base, title: 'This model is not available any more. Pick another model.' };
		case 'network_error':
			return { ...base, title: 'The connection to the server was lost.' };
		default:
			if (error.status === 403) {
				return {
					...base,
					title: 'Your plan or subscription does not cover this model.',
					link: { href: '/plans', label: 'See the plans' }
				};
			}
			if (error.status === 401) {
				return {
					...base,
					title: 'You are signed out.',
					link: { href: '/signin?next=/chat', label: 'Sign in' }
				};
			}
			return { ...base, title: error.message, detail: '' };
	}
}
