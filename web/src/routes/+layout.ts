// A single-page app: every page renders in the browser, with the session cookie.
export const ssr = false;
export const prerender = false;
