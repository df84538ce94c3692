// The theme a person chose with the toggle (localStorage), applied before the first paint so the
// page does not flash the other one. Without a choice, CSS follows prefers-color-scheme.
(function () {
	try {
		var theme = localStorage.getItem('aiforge-theme');
		if (theme === 'light' || theme === 'dark') {
			document.documentElement.dataset.theme = theme;
		}
	} catch {
		// Storage can be blocked; the system theme applies then.
	}
})();
