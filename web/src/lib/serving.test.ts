import { describe, expect, it } from 'vitest';
import { placementText, servingText } from './serving';

describe('servability in words', () => {
	it('names the engine, the architecture and the memory of a servable file', () => {
		expect(
			servingText({
				status: 'servable',
				engine: 'candle',
				architecture: 'llama',
				quantisation: 'Q4_1',
				memory_bytes: 200 * 1024 * 1024,
				context_tokens: 2048
			})
		).toBe('Served by the built-in engine (llama, Q4_1), needs about 200.0 MB of memory.');
	});

	it('gives the reason of a file nothing here serves', () => {
		expect(
			servingText({
				status: 'not_servable',
				reason: {
					code: 'not_gguf',
					message: 'the file is not a GGUF model (it may be sold as a download, not served)'
				}
			})
		).toBe(
			'Not served here: the file is not a GGUF model (it may be sold as a download, not served).'
		);
	});
});

describe('placement in words', () => {
	const placement = {
		sha256: 'ab',
		model_ids: ['m1'],
		memory_bytes: 1,
		serving_on: [] as string[],
		loading_on: [] as string[],
		placed_on: [] as string[],
		waiting: null as { code: string; reason: string } | null
	};

	it('counts the nodes that serve the model', () => {
		expect(
			placementText({
				model_id: 'm1',
				in_process: false,
				placement: { ...placement, serving_on: ['a', 'b'] }
			})
		).toBe('Served by 2 inference nodes.');
	});

	it("gives the server's reason for a model that waits, and says who answers meanwhile", () => {
		const waiting = {
			code: 'no_room',
			reason: 'no inference node has room: the model needs 5 bytes, the most free on a node is 4'
		};
		expect(
			placementText({ model_id: 'm1', in_process: true, placement: { ...placement, waiting } })
		).toBe(
			"Waiting for an inference node: no inference node has room: the model needs 5 bytes, the most free on a node is 4. Meanwhile the platform's own node answers its calls."
		);
	});

	it('says nothing of a model not placed on nodes', () => {
		expect(placementText({ model_id: 'm1', in_process: true, placement: null })).toBeNull();
	});
});
