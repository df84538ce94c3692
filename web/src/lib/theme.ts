/** Light, dark, or the system's choice; static/theme.js applies the stored one before paint. */
export type Theme = 'light' | 'dark';

const KEY = 'aiforge-theme';

export function currentTheme(): Theme {
	const chosen = document.documentElement.dataset.theme;
	if (chosen === 'light' || chosen === 'dark') {
		return chosen;
	}
	return window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

export function applyTheme(theme: Theme): void {
	document.documentElement.dataset.theme = theme;
	try {
		localStorage.setItem(KEY, theme);
	} catch {
		// Blocked storage: the choice lasts for this page only.
	}
}
