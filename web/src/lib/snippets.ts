/**
 * Ready-to-paste ways to call a model with an API key: curl, the official OpenAI Python and
 * Node SDKs, and Continue.dev's `config.yaml`. Every value is quoted for its language (JSON
 * string literals are valid Python, JavaScript and YAML strings), so a key or id is never code.
 */

export interface SnippetInput {
	/** The OpenAI-compatible base URL, e.g. `https://aiforge.example/api/v1`. */
	baseUrl: string;
	apiKey: string;
	modelId: string;
	/** A person's name for the model (Continue shows it). */
	modelName: string;
}

export interface Snippet {
	id: 'curl' | 'python' | 'node' | 'continue';
	label: string;
	language: string;
	code: string;
}

const q = (value: string) => JSON.stringify(value);

/** A JSON body inside single quotes for a POSIX shell. */
function shellQuoted(text: string): string {
	return `'${text.replaceAll("'", `'\\''`)}'`;
}

export function apiBaseUrl(origin: string): string {
	return `${origin.replace(/\/$/, '')}/api/v1`;
}

export function snippets({ baseUrl, apiKey, modelId, modelName }: SnippetInput): Snippet[] {
	const body = JSON.stringify({
		model: modelId,
		messages: [{ role: 'user', content: 'Hello!' }]
	});
	return [
		{
			id: 'curl',
			label: 'curl',
			language: 'shell',
			code: [
				`curl ${shellQuoted(`${baseUrl}/chat/completions`)} \\`,
				`  -H ${shellQuoted(`Authorization: Bearer ${apiKey}`)} \\`,
				`  -H 'Content-Type: application/json' \\`,
				`  -d ${shellQuoted(body)}`
			].join('\n')
		},
		{
			id: 'python',
			label: 'Python (openai)',
			language: 'python',
			code: [
				'from openai import OpenAI',
				'',
				`client = OpenAI(base_url=${q(baseUrl)}, api_key=${q(apiKey)})`,
				'response = client.chat.completions.create(',
				`    model=${q(modelId)},`,
				'    messages=[{"role": "user", "content": "Hello!"}],',
				')',
				'print(response.choices[0].message.content)'
			].join('\n')
		},
		{
			id: 'node',
			label: 'Node (openai)',
			language: 'javascript',
			code: [
				"import OpenAI from 'openai';",
				'',
				`const client = new OpenAI({ baseURL: ${q(baseUrl)}, apiKey: ${q(apiKey)} });`,
				'const response = await client.chat.completions.create({',
				`  model: ${q(modelId)},`,
				"  messages: [{ role: 'user', content: 'Hello!' }]",
				'});',
				'console.log(response.choices[0].message.content);'
			].join('\n')
		},
		{
			id: 'continue',
			label: 'Continue.dev',
			language: 'yaml',
			code: [
				'# ~/.continue/config.yaml',
				'name: AIForge',
				'version: 0.0.1',
				'schema: v1',
				'models:',
				`  - name: ${q(modelName)}`,
				'    provider: openai',
				`    model: ${q(modelId)}`,
				`    apiBase: ${q(baseUrl)}`,
				`    apiKey: ${q(apiKey)}`,
				'    roles:',
				'      - chat',
				'      - edit'
			].join('\n')
		}
	];
}
