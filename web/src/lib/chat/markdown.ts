/**
 * Model output and user text as HTML that can do nothing but show text. Two layers:
 * 1. marked renders Markdown with every raw HTML tag escaped (shown as text, as ChatGPT does),
 *    images as a plain-text note (nothing is ever fetched for them), task-list boxes as text, and
 *    code highlighted by highlight.js;
 * 2. DOMPurify then keeps only an allow-list of harmless tags and attributes, only `http(s):`,
 *    `mailto:` and `#` links (never `javascript:` or `data:`), and opens links in a new tab
 *    without an opener or a referrer.
 * The page's Content-Security-Policy (api/src/web.rs: no inline script, images from 'self' and
 * `data:` only) is a third layer should both ever fail.
 */
import DOMPurify from 'dompurify';
import hljs from 'highlight.js/lib/common';
import { Marked, type Tokens } from 'marked';

/** Code longer than this is shown unhighlighted: highlighting it would stall the page. */
export const HIGHLIGHT_CHARS_MAX = 20_000;

const ALLOWED_TAGS = [
	'a',
	'blockquote',
	'br',
	'code',
	'del',
	'em',
	'h1',
	'h2',
	'h3',
	'h4',
	'h5',
	'h6',
	'hr',
	'li',
	'ol',
	'p',
	'pre',
	's',
	'span',
	'strong',
	'table',
	'tbody',
	'td',
	'th',
	'thead',
	'tr',
	'ul'
];
const ALLOWED_ATTR = ['href', 'title', 'class', 'start', 'align'];
/** Links that a click can follow safely: web pages, mail, and places in this answer. */
export const SAFE_LINK = /^(?:https?:\/\/|mailto:|#)/i;

export function escapeHtml(text: string): string {
	return text
		.replaceAll('&', '&amp;')
		.replaceAll('<', '&lt;')
		.replaceAll('>', '&gt;')
		.replaceAll('"', '&quot;')
		.replaceAll("'", '&#39;');
}

function highlight(code: string, lang: string | undefined): { html: string; language: string } {
	const language = lang?.trim().split(/\s+/)[0]?.toLowerCase() ?? '';
	if (code.length > HIGHLIGHT_CHARS_MAX) {
		return { html: escapeHtml(code), language };
	}
	if (language && hljs.getLanguage(language)) {
		return { html: hljs.highlight(code, { language, ignoreIllegals: true }).value, language };
	}
	const auto = hljs.highlightAuto(code);
	return { html: auto.value, language: auto.language ?? '' };
}

const marked = new Marked({
	gfm: true,
	breaks: false,
	async: false,
	renderer: {
		html({ text }: Tokens.HTML | Tokens.Tag): string {
			return escapeHtml(text);
		},
		image({ text, href }: Tokens.Image): string {
			const label = text ? `${text}: ` : '';
			return `<span class="blocked-image">[image not loaded: ${escapeHtml(label + href)}]</span>`;
		},
		checkbox({ checked }: Tokens.Checkbox): string {
			return checked ? '☑ ' : '☐ ';
		},
		code({ text, lang }: Tokens.Code): string {
			const { html, language } = highlight(text, lang);
			const languageClass = /^[a-z0-9+#-]+$/.test(language) ? ` language-${language}` : '';
			return `<pre><code class="hljs${languageClass}">${html}</code></pre>\n`;
		}
	}
});

let hooked = false;

function purifier() {
	if (!hooked) {
		DOMPurify.addHook('afterSanitizeAttributes', (node) => {
			if (node.tagName === 'A') {
				const href = node.getAttribute('href');
				if (href !== null && !SAFE_LINK.test(href.trim())) {
					node.removeAttribute('href');
				}
				if (node.hasAttribute('href') && !node.getAttribute('href')!.startsWith('#')) {
					node.setAttribute('target', '_blank');
					node.setAttribute('rel', 'noopener noreferrer nofollow');
				}
			}
		});
		hooked = true;
	}
	return DOMPurify;
}

/** Sanitises HTML to the allow-list (also used on its own, for any HTML from elsewhere). */
export function sanitizeHtml(html: string): string {
	return purifier().sanitize(html, {
		ALLOWED_TAGS,
		ALLOWED_ATTR,
		ALLOWED_URI_REGEXP: SAFE_LINK,
		ALLOW_DATA_ATTR: false,
		ALLOW_ARIA_ATTR: false
		// `target` and `rel` are set by the hook above, after the allow-list ran.
	});
}

/** Markdown to safe HTML. */
export function renderMarkdown(markdown: string): string {
	return sanitizeHtml(marked.parse(markdown, { async: false }));
}
