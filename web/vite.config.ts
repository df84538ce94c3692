import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

export default defineConfig({
	plugins: [sveltekit()],
	server: {
		// `npm run dev` talks to a running `aiforge serve` for /api.
		proxy: { '/api': process.env.AIFORGE_URL ?? 'http://127.0.0.1:8080' }
	}
});
