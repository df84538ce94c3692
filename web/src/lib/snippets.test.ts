import { describe, expect, it } from 'vitest';
import { apiBaseUrl, snippets } from './snippets';

const input = {
	baseUrl: apiBaseUrl('https://aiforge.example/'),
	apiKey: 'aiforge_abc123',
	modelId: '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b',
	modelName: 'Tiny "quoted" model'
};

describe('snippets', () => {
	it('use the base URL, the key and the model id in every language', () => {
		expect(input.baseUrl).toBe('https://aiforge.example/api/v1');
		for (const snippet of snippets(input)) {
			expect(snippet.code).toContain('https://aiforge.example/api/v1');
			expect(snippet.code).toContain('aiforge_abc123');
			expect(snippet.code).toContain(input.modelId);
		}
	});

	it('give curl a JSON body that parses and names the model', () => {
		const curl = snippets(input).find((s) => s.id === 'curl')?.code ?? '';
		const body = /-d '(.*)'$/m.exec(curl)?.[1] ?? '';
		expect(JSON.parse(body)).toEqual({
			model: input.modelId,
			messages: [{ role: 'user', content: 'Hello!' }]
		});
		expect(curl).toContain("'https://aiforge.example/api/v1/chat/completions'");
	});

	it('quote a name with quotes so it stays a string', () => {
		const yaml = snippets(input).find((s) => s.id === 'continue')?.code ?? '';
		expect(yaml).toContain('name: "Tiny \\"quoted\\" model"');
		expect(yaml).toContain('provider: openai');
	});

	it('escape a single quote in the shell', () => {
		const curl = snippets({ ...input, modelId: "it's" }).find((s) => s.id === 'curl')?.code ?? '';
		expect(curl).toContain(`"model":"it'\\''s"`);
	});
});
