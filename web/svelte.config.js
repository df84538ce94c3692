import adapter from '@sveltejs/adapter-static';
import { vitePreprocess } from '@sveltejs/vite-plugin-svelte';

/** @type {import('@sveltejs/kit').Config} */
const config = {
	preprocess: vitePreprocess(),
	kit: {
		// A single-page app: `aiforge serve` answers every non-API path with index.html
		// (see api/src/web.rs), so there is nothing to prerender and no server to run.
		adapter: adapter({ pages: 'build', assets: 'build', fallback: 'index.html', strict: true }),
		// No inline style: the page's Content-Security-Policy allows stylesheets from 'self' only.
		inlineStyleThreshold: 0,
		output: { bundleStrategy: 'split' },
		// SvelteKit's SPA shell starts the app with an inline <script>; the CSP forbids inline
		// script, so scripts/check-no-inline-script.mjs moves it into a file after the build.
		version: { pollInterval: 0 }
	}
};

export default config;
