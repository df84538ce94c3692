import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vitest/config';

export default defineConfig({
	plugins: [sveltekit()],
	// Components are mounted as in the browser (Svelte's client runtime, not its server one).
	resolve: { conditions: ['browser'] },
	test: { include: ['src/**/*.test.ts'], environment: 'node' }
});
