// After `vite build`: the pages' Content-Security-Policy (api/src/web.rs) allows scripts from
// 'self' only, with no 'unsafe-inline' and no hashes. SvelteKit's SPA shell starts the app with
// an inline <script>, so this moves every inline script of the built HTML into a file named by
// its SHA-256 (a classic script, so `document.currentScript` still finds its parent element, as
// SvelteKit's bootstrap expects), then fails if any inline script or inline event handler is left.
//   node scripts/check-no-inline-script.mjs build
import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join, relative } from 'node:path';

const root = process.argv[2] ?? 'build';
const bootDir = join(root, '_app', 'immutable', 'boot');
const INLINE_SCRIPT = /<script(?![^>]*\bsrc=)([^>]*)>([\s\S]*?)<\/script>/gi;

async function htmlFiles(dir) {
	const found = [];
	for (const entry of await readdir(dir, { withFileTypes: true })) {
		const path = join(dir, entry.name);
		if (entry.isDirectory()) {
			found.push(...(await htmlFiles(path)));
		} else if (entry.name.endsWith('.html')) {
			found.push(path);
		}
	}
	return found;
}

const problems = [];
let moved = 0;
for (const file of await htmlFiles(root)) {
	const html = await readFile(file, 'utf8');
	const replaced = [];
	for (const match of html.matchAll(INLINE_SCRIPT)) {
		const [whole, attributes, code] = match;
		if (/\btype\s*=\s*["']?(application\/(ld\+)?json|importmap)/i.test(attributes)) {
			problems.push(`${file}: inline data script (${attributes.trim()})`);
			continue;
		}
		const digest = createHash('sha256').update(code).digest('hex').slice(0, 16);
		const name = `boot.${digest}.js`;
		await mkdir(bootDir, { recursive: true });
		await writeFile(join(bootDir, name), code.trim() + '\n');
		const src = '/' + relative(root, join(bootDir, name)).split('\\').join('/');
		replaced.push([whole, `<script src="${src}"></script>`]);
	}
	let output = html;
	for (const [from, to] of replaced) {
		output = output.replace(from, to);
	}
	moved += replaced.length;
	if (output !== html) {
		await writeFile(file, output);
	}
	for (const match of output.matchAll(INLINE_SCRIPT)) {
		problems.push(`${file}: inline <script> left: ${match[0].slice(0, 80)}`);
	}
	for (const match of output.matchAll(/<[^>]+\son[a-z]+\s*=/gi)) {
		problems.push(`${file}: inline event handler: ${match[0].slice(0, 80)}`);
	}
	if (/javascript:/i.test(output)) {
		problems.push(`${file}: a javascript: URL`);
	}
}

if (problems.length > 0) {
	console.error(`check-no-inline-script: ${problems.length} problem(s):\n${problems.join('\n')}`);
	process.exit(1);
}
console.log(`check-no-inline-script: no inline script in ${root} (${moved} moved into files)`);
