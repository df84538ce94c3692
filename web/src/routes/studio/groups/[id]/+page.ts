// A group the person belongs to; any other is the 404 page.
import { error, redirect } from '@sveltejs/kit';
import { api, ApiError } from '$lib/api';
import type { PageLoad } from './$types';

export const load: PageLoad = async ({ params, url }) => {
	try {
		return await api.group(params.id);
	} catch (e) {
		if (e instanceof ApiError && (e.status === 404 || e.status === 403)) {
			error(404, 'This group does not exist, or you are not in it.');
		}
		if (e instanceof ApiError && e.status === 401) {
			redirect(307, `/signin?next=${encodeURIComponent(url.pathname)}`);
		}
		throw e;
	}
};
