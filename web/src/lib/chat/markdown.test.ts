// @vitest-environment jsdom
import { describe, expect, it } from 'vitest';
import { renderMarkdown, sanitizeHtml } from './markdown';

/** The rendered HTML as a DOM, to ask what it holds rather than match strings. */
function dom(html: string): HTMLElement {
	const root = document.createElement('div');
	root.innerHTML = html;
	return root;
}

/** Everything in the output that could run script or fetch anything. */
function dangers(root: HTMLElement): string[] {
	const found: string[] = [];
	for (const el of root.querySelectorAll('*')) {
		if (
			[
				'SCRIPT',
				'IMG',
				'IFRAME',
				'OBJECT',
				'EMBED',
				'SVG',
				'MATH',
				'STYLE',
				'LINK',
				'META',
				'FORM',
				'INPUT',
				'VIDEO',
				'AUDIO',
				'SOURCE',
				'BASE'
			].includes(el.tagName.toUpperCase())
		) {
			found.push(`<${el.tagName.toLowerCase()}>`);
		}
		for (const attribute of el.attributes) {
			const name = attribute.name.toLowerCase();
			if (
				name.startsWith('on') ||
				['src', 'srcset', 'style', 'action', 'formaction', 'background', 'poster'].includes(name)
			) {
				found.push(`${el.tagName.toLowerCase()}[${name}]`);
			}
		}
		const href = el.getAttribute('href');
		if (href !== null && !/^(https?:\/\/|mailto:|#)/i.test(href)) {
			found.push(`href=${href}`);
		}
	}
	return found;
}

const HOSTILE = [
	'<img src=x onerror=alert(1)>',
	'<script>alert(1)</script>',
	'[click me](javascript:alert(1))',
	'[click me](JaVaScRiPt:alert(1))',
	'[spaced](  javascript:alert(1))',
	'<a href="javascript:alert(1)">raw link</a>',
	'![tracker](https://evil.example/pixel.png)',
	'![relative](x)',
	'<img src="https://evil.example/pixel.png">',
	'<svg onload=alert(1)><circle/></svg>',
	'<iframe src="https://evil.example"></iframe>',
	'<p style="background:url(https://evil.example/bg.png)">styled</p>',
	'[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)',
	'<details open ontoggle=alert(1)>x</details>',
	'[ref link][r]\n\n[r]: javascript:alert(1)',
	'```html\n<script>alert(1)</script>\n```',
	'`<img src=x onerror=alert(1)>`',
	'- [x] <img src=x onerror=alert(1)>'
];

describe('the Markdown sanitiser', () => {
	for (const input of HOSTILE) {
		it(`renders ${JSON.stringify(input)} harmless`, () => {
			const root = dom(renderMarkdown(input));
			expect(dangers(root)).toEqual([]);
		});
	}

	it('shows raw HTML as text rather than dropping what the model wrote', () => {
		const root = dom(
			renderMarkdown('Look: <img src=x onerror=alert(1)> and <script>alert(2)</script>')
		);
		expect(root.textContent).toContain('<img src=x onerror=alert(1)>');
		expect(root.textContent).toContain('<script>alert(2)</script>');
	});

	it('shows an image as a note with its address, fetching nothing', () => {
		const root = dom(renderMarkdown('![tracker](https://evil.example/pixel.png)'));
		expect(root.querySelector('img')).toBeNull();
		expect(root.textContent).toContain('image not loaded: tracker: https://evil.example/pixel.png');
	});

	it('keeps a javascript: link as text without its address', () => {
		const root = dom(renderMarkdown('[click me](javascript:alert(1))'));
		const link = root.querySelector('a');
		expect(root.textContent).toContain('click me');
		expect(link?.getAttribute('href') ?? null).toBeNull();
	});

	it('opens web links in a new tab without opener or referrer', () => {
		const root = dom(renderMarkdown('[docs](https://example.com/docs) and <https://example.org>'));
		const links = [...root.querySelectorAll('a')];
		expect(links.map((a) => a.getAttribute('href'))).toEqual([
			'https://example.com/docs',
			'https://example.org'
		]);
		for (const a of links) {
			expect(a.getAttribute('target')).toBe('_blank');
			expect(a.getAttribute('rel')).toBe('noopener noreferrer nofollow');
		}
	});

	it('renders Markdown: headings, emphasis, lists, tables and highlighted code', () => {
		const root = dom(
			renderMarkdown(
				'# Title\n\n**bold** and *it*\n\n1. one\n2. two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```rust\nfn main() { let x = 1; }\n```'
			)
		);
		expect(root.querySelector('h1')?.textContent).toBe('Title');
		expect(root.querySelector('strong')?.textContent).toBe('bold');
		expect(root.querySelectorAll('ol li')).toHaveLength(2);
		expect(root.querySelectorAll('table td')).toHaveLength(2);
		const code = root.querySelector('pre code');
		expect(code?.className).toBe('hljs language-rust');
		expect(code?.textContent).toBe('fn main() { let x = 1; }');
		expect(code?.querySelector('span.hljs-keyword')?.textContent).toBe('fn');
	});

	it('keeps code text exact, markup characters included', () => {
		const source = 'if a < b && c > "d" { return \'<img src=x>\'; }';
		const root = dom(renderMarkdown('```\n' + source + '\n```'));
		expect(root.querySelector('pre code')?.textContent).toBe(source);
	});

	it('sanitises HTML given directly, too', () => {
		const root = dom(
			sanitizeHtml(
				'<p onclick="alert(1)">x<img src=x onerror=alert(1)><a href="javascript:x">y</a></p>'
			)
		);
		expect(dangers(root)).toEqual([]);
		expect(root.textContent).toBe('xy');
	});
});
