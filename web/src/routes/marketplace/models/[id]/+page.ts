// A model on the marketplace. One that is not on it is the 404 page.
import { error } from '@sveltejs/kit';
import { api, ApiError } from '$lib/api';
import type { PageLoad } from './$types';

export const load: PageLoad = async ({ params }) => {
	try {
		return await api.marketplaceModel(params.id);
	} catch (e) {
		if (e instanceof ApiError && e.status === 404) {
			error(404, 'This model is not on the marketplace.');
		}
		throw e;
	}
};
