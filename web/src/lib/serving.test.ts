import { describe, expect, it } from 'vitest';
import { servingText } from './serving';

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
