import { describe, expect, it } from 'vitest';
import { ApiError } from '$lib/api';
import { explainChatError } from './errors';
import { GatewayError } from './stream';

describe('gateway errors in words', () => {
	const now = Date.parse('2026-12-03T08:00:00Z');

	it('a used-up quota says so and links to the plan usage', () => {
		const problem = explainChatError(
			new GatewayError(429, 'insufficient_quota', 'monthly request limit reached'),
			now
		);
		expect(problem.title).toMatch(/quota is used up/);
		expect(problem.detail).toContain('monthly request limit reached');
		expect(problem.link?.href).toBe('/plans');
		expect(problem.retryAt).toBeNull();
	});

	it('a rate limit says when to try again', () => {
		const problem = explainChatError(
			new GatewayError(429, 'rate_limit_exceeded', 'too many requests per minute', 42),
			now
		);
		expect(problem.title).toBe('Too many requests: try again in 42 seconds.');
		expect(problem.retryAt?.toISOString()).toBe('2026-12-03T08:00:42.000Z');
	});

	it('no node, a lost node and an overloaded platform each have their own sentence', () => {
		expect(
			explainChatError(new GatewayError(503, 'no_node_available', 'no node serves it')).title
		).toMatch(/No node is serving this model/);
		const lost = explainChatError(new GatewayError(0, 'node_lost', 'the node went silent'));
		expect(lost.title).toMatch(/lost mid-answer/);
		expect(lost.detail).toMatch(/regenerate/);
		expect(explainChatError(new GatewayError(503, 'server_overloaded', 'busy')).title).toMatch(
			/busy/
		);
	});

	it('a model the entitlement does not cover, and an unknown code, keep the server message', () => {
		const forbidden = explainChatError(new ApiError(403, 'not_entitled', 'not in your plan'));
		expect(forbidden.title).toMatch(/does not cover this model/);
		expect(forbidden.detail).toBe('not in your plan');
		const unknown = explainChatError(new GatewayError(418, 'teapot', 'I am a teapot'));
		expect(unknown.title).toBe('I am a teapot');
		expect(unknown.code).toBe('teapot');
	});
});
