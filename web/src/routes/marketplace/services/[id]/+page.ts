// A service of the marketplace. One that is not on it (or not the viewer's) is the 404 page.
import { error } from '@sveltejs/kit';
import { api, ApiError } from '$lib/api';
import type { PageLoad } from './$types';

export const load: PageLoad = async ({ params }) => {
	try {
		return { service: (await api.service(params.id)).service };
	} catch (e) {
		if (e instanceof ApiError && e.status === 404) {
			error(404, 'This service is not on the marketplace.');
		}
		throw e;
	}
};
