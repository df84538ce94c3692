/**
 * The one client of the AIForge API that every page uses. Its types match the server's JSON
 * (api/src/routes/*.rs). The browser's session is an HttpOnly cookie the page never sees: every
 * request goes to the same origin with it, and every request carries `X-AIForge-CSRF`, which a
 * cross-site form or script cannot send, so the server accepts cookie-authenticated writes only
 * from this app (api/src/session.rs). Money is a decimal string from the server, shown as it is.
 */

/** The header the server requires on cookie-authenticated writes and sign-ins. */
export const CSRF_HEADER = 'X-AIForge-CSRF';

export type Network = 'ethereum' | 'tron';
export type PlanId = 'free' | 'basic' | 'pro' | 'enterprise';
/** A USDT amount as the server writes it ("10", "0.5"): never parsed into a float here. */
export type Money = string;

export interface WalletRecord {
	network: Network;
	address: string;
	verified: boolean;
	connected_at: string | null;
	verified_at: string | null;
	/** This network's payouts go to this wallet. */
	payout?: boolean;
}

export interface Me {
	id: string;
	email: string | null;
	username: string | null;
	/** `network:address` of the wallet that created the account, if one did. */
	wallet: string | null;
	registered_at: string;
	wallets: WalletRecord[];
	/** `network:address` when this session was opened by a wallet signature. */
	signed_in_with: string | null;
	is_admin: boolean;
}

export interface RegisteredUser {
	id: string;
	email: string | null;
	username: string | null;
	registered_at: string;
}

/** What a sign-in answers when it opens a cookie session (no token: the cookie holds it). */
export interface Session {
	user_id: string;
	session: 'cookie';
	expires_in: number;
	wallet?: { network: Network; address: string };
	account_created?: boolean;
	is_admin?: boolean;
}

export interface AuthMessage {
	network: Network;
	address: string;
	domain: string;
	message: string;
	nonce: string;
	issued_at: string;
	expires_at: string;
}

export interface SignedMessage {
	network: Network;
	address: string;
	message: string;
	signature: string;
}

export interface Plan {
	id: PlanId;
	name: string;
	price_per_month: Money;
	requests_per_month: number;
	tokens_per_month: number;
}

export interface SubscriptionPeriod {
	plan: PlanId;
	starts_at: string;
	ends_at: string | null;
}

export interface PlatformSubscription {
	active: SubscriptionPeriod | null;
	upcoming: SubscriptionPeriod[];
	awaiting_payment: { plan: PlanId; payment_id: string } | null;
	cancelled: boolean;
}

/** What pays for a chat model: the platform plan, or one of the user's API subscriptions. */
export type Entitlement =
	{ kind: 'plan'; plan: PlanId } | { kind: 'subscription'; subscription_id: string };

/** A model the signed-in user may chat with, and which entitlement pays (`label`). */
export interface ChatModel {
	id: string;
	name: string;
	service_id: string;
	entitlement: Entitlement;
	label: string;
}

/** The current plan's use of its monthly limits. */
export interface PlanUsage {
	plan: PlanId;
	period_start: string;
	period_end: string;
	requests_used: number;
	requests_limit: number;
	tokens_used: number;
	tokens_limit: number;
}

export interface ApiKeyStatus {
	exists: boolean;
	prefix: string | null;
	created_at: string | null;
}

/** A freshly made platform API key: `key` is shown once and never again. */
export interface CreatedApiKey {
	key: string;
	prefix: string;
	created_at: string;
}

export interface ConversationSummary {
	id: string;
	title: string;
	model: string;
	updated_at: string;
}

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

export interface Share {
	party: 'creator' | 'group_member' | 'platform' | 'plan_pool';
	name: string;
	amount: Money;
}

/** What one answer cost and where its money went, tied to its metering event. */
export interface Receipt {
	request_id: string;
	model: string;
	prompt_tokens: number;
	completion_tokens: number;
	total_tokens: number;
	cost: Money;
	entitlement: Entitlement;
	shares: Share[];
	pool_share_this_month: Money | null;
	event: { global_position: number; seal: Record<string, unknown> | null };
	verify: string;
}

export interface Message {
	id: string;
	parent_id: string | null;
	role: 'user' | 'assistant';
	content: string;
	created_at: string;
	model?: string;
	finish_reason?: FinishReason;
	error?: { code: string; message: string };
	receipt?: Receipt;
}

export interface ConversationSettings {
	system_prompt: string | null;
	temperature: number | null;
	max_tokens: number | null;
}

export interface Conversation extends ConversationSettings {
	id: string;
	title: string;
	model: string;
	entitlement: Entitlement;
	created_at: string;
	updated_at: string;
	messages: Message[];
}

export interface NewConversation extends Partial<ConversationSettings> {
	title?: string;
	model: string;
	entitlement: Entitlement;
}

export type ConversationChanges = Partial<
	ConversationSettings & { title: string; model: string; entitlement: Entitlement }
>;

export type ExportFormat = 'markdown' | 'json';

/** A USDT payment as the server keeps it (`payments_view`); amounts are decimal strings. */
export interface Payment {
	payment_id: string;
	payer: string;
	payment_type: string;
	network: Network;
	amount: Money;
	reference: string;
	/** The platform wallet to send the USDT to. */
	pay_to: string;
	status: string;
	tx_hash: string | null;
	from_address: string | null;
	paid: Money | null;
	platform_fee: Money | null;
	net: Money | null;
	fee_schedule_version: number | null;
	created_at: string;
	confirmed_at: string | null;
}

/** What a browser wallet needs to pay on one network (`GET /api/payments/networks`). */
export interface PaymentChain {
	network: Network;
	/** EIP-155 chain id (Ethereum); null on Tron. */
	chain_id: number | null;
	usdt_contract: string;
	decimals: number;
	platform_wallet: string;
	confirmations: number;
}

/** `POST /api/payments/verify`: 200 confirmed, 202 with `verification` while not final. */
export interface VerifyAnswer {
	payment: Payment;
	verification?: { status: 'pending'; confirmations: number; required_confirmations: number };
}

export type PaymentType = 'job' | 'publishing_fee' | 'listing_fee' | 'model_sale';

export type PricingType = 'monthly' | 'pay_per_request' | 'hybrid';

export type Pricing =
	| { type: 'monthly'; price_per_month: Money }
	| {
			type: 'pay_per_request';
			price_per_request: Money;
			price_per_1k_input_tokens: Money;
			price_per_1k_output_tokens: Money;
	  }
	| {
			type: 'hybrid';
			price_per_month: Money;
			included_requests: number;
			included_tokens: number;
			price_per_request: Money;
			price_per_1k_input_tokens: Money;
			price_per_1k_output_tokens: Money;
	  };

export interface RateLimits {
	requests_per_minute?: number | null;
	requests_per_hour?: number | null;
	requests_per_day?: number | null;
	requests_per_month?: number | null;
	tokens_per_month?: number | null;
}

/** An API service: a model offered with pricing and limits. */
export interface Service {
	id: string;
	owner: string;
	model: { id: string; name: string; state: string };
	name: string;
	description: string;
	pricing: Pricing;
	pricing_version: number;
	rate_limits: RateLimits;
	active: boolean;
	included_in_plans: boolean;
	subscribers: number;
	created_at: string;
	updated_at: string;
}

export interface ServicesPage {
	services: Service[];
	page: number;
	per_page: number;
	total: number;
}

export type MarketplaceSort = 'newest' | 'popular' | 'price';

export interface MarketplaceFilter {
	search?: string;
	pricing?: PricingType | '';
	sort?: MarketplaceSort;
	page?: number;
	per_page?: number;
}

export interface ApiSubscription {
	id: string;
	service_id: string;
	model_id: string;
	status: string | null;
	pricing: Pricing;
	pricing_version: number;
	amount_due: Money;
	credit: Money;
	payment_id: string | null;
	api_key_hint: string | null;
	period_end: string | null;
	requested_at: string;
	activated_at: string | null;
	cancelled_at: string | null;
	/** On the app clock: pending_payment | active | grace | expired | cancelled. */
	state?: SubscriptionState;
	grace_until?: string | null;
	/** The monthly fee a renewal costs (null: nothing to renew). */
	renewal_price?: Money | null;
	accepts_top_up?: boolean;
}

export type SubscriptionState = 'pending_payment' | 'active' | 'grace' | 'expired' | 'cancelled';

/** A renewal or a top-up: the payment to make (null when nothing is due). */
export interface SubscriptionPayment {
	subscription: ApiSubscription;
	amount_due: Money;
	payment: Payment | null;
}

/** A new subscription: its key is in this answer only. */
export interface Subscribed {
	subscription: ApiSubscription;
	api_key: string;
	api_key_notice: string;
	amount_due: Money;
	payment: Payment | null;
}

export interface SubscriptionUsage {
	subscription_id: string;
	requests: number;
	prompt_tokens: number;
	completion_tokens: number;
	total_tokens: number;
	cost: Money;
	credit: Money;
	credit_remaining: Money;
	/** The current period (null for pay-per-request). */
	period?: { start: string; end: string; requests: number; tokens: number } | null;
	/** What is left this period; null members are unlimited. */
	quota?: {
		requests_per_month: number | null;
		tokens_per_month: number | null;
		requests_remaining: number | null;
		tokens_remaining: number | null;
	} | null;
}

export interface Model {
	id: string;
	owner: { kind: 'user' | 'group'; id: string };
	uploaded_by: string;
	name: string;
	description: string;
	tags: string[];
	sha256: string;
	cid: string | null;
	size_bytes: number;
	storage: string;
	source: unknown;
	/** `uploaded`, `listed`, `grace`, `delisted`, … */
	state: string;
	published_at: string | null;
	listed_until: string | null;
	grace_until: string | null;
	uploaded_at: string;
	updated_at: string;
	/** Null: not for sale. */
	sale_price?: Money | null;
	/** The caller bought it. */
	purchased?: boolean;
	/** Whether an engine here serves it; null for models recorded before servability was judged. */
	servable?: boolean | null;
	serving?: Serving | null;
}

/** The judgement made at upload: what serves the file, or why nothing here can. */
export type Serving =
	| {
			status: 'servable';
			engine: 'candle' | 'llama_cpp' | 'upstream';
			architecture: string | null;
			quantisation: string | null;
			memory_bytes: number;
			context_tokens: number | null;
	  }
	| { status: 'not_servable'; reason: { code: string; message: string } };

/** One result of the marketplace search: a published model, or a service. */
export interface SearchItem {
	kind: 'model' | 'service';
	id: string;
	model_id: string;
	name: string;
	description: string;
	tags: string[];
	owner: { kind: 'user' | 'group'; id: string };
	/** A service's monthly fee or per-request price; a model's sale price. */
	price: Money | null;
	pricing_kind: PricingType | null;
	requests_30d: number;
	created_at: string;
}

export type SearchSort = 'newest' | 'popular' | 'price_asc' | 'price_desc';

export interface SearchFilter {
	q?: string;
	kind?: 'model' | 'service' | '';
	pricing?: PricingType | '';
	min_price?: Money;
	max_price?: Money;
	/** Comma-separated; every tag must match. */
	tags?: string;
	sort?: SearchSort;
	page?: number;
	per_page?: number;
}

export interface SearchPage {
	items: SearchItem[];
	page: number;
	per_page: number;
	total: number;
}

/** A model on the marketplace, with its services and last 30 days of use. */
export interface MarketplaceModel {
	model: {
		id: string;
		name: string;
		description: string;
		tags: string[];
		size_bytes: number;
		sha256: string;
		cid: string | null;
		owner: { kind: 'user' | 'group'; id: string };
		state: string;
		published_at: string | null;
		sale_price: Money | null;
		servable?: boolean | null;
		serving?: Serving | null;
	};
	services: Service[];
	usage_30d: { requests: number; tokens: number };
}

export interface Publishing {
	model_id: string;
	state: string;
	published_at: string | null;
	listed_until: string | null;
	grace_until: string | null;
	publishing_fee: Money;
	first_publication_free_available: boolean;
	listing_fee: Money;
	listing_period_days: number;
	grace_days: number;
	fee_schedule_version: number;
}

/** The platform's error shape: `{"error":{"code","message"[,"field"]}}`. */
export class ApiError extends Error {
	readonly status: number;
	readonly code: string;
	readonly field: string | undefined;

	constructor(status: number, code: string, message: string, field?: string) {
		super(message);
		this.name = 'ApiError';
		this.status = status;
		this.code = code;
		this.field = field;
	}
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === 'object' && value !== null;
}

function errorFrom(status: number, body: unknown): ApiError {
	const error = isRecord(body) && isRecord(body.error) ? body.error : undefined;
	const code = typeof error?.code === 'string' ? error.code : `http_${status}`;
	const message =
		typeof error?.message === 'string' ? error.message : `The server answered ${status}.`;
	const field = typeof error?.field === 'string' ? error.field : undefined;
	return new ApiError(status, code, message, field);
}

async function request<T>(method: Method, path: string, body?: unknown): Promise<T> {
	const headers: Record<string, string> = { Accept: 'application/json', [CSRF_HEADER]: '1' };
	if (body !== undefined) {
		headers['Content-Type'] = 'application/json';
	}
	if (method !== 'GET') {
		// A retried command with the same key is answered once (the server's idempotency rule).
		headers['Idempotency-Key'] = crypto.randomUUID();
	}
	let response: Response;
	try {
		response = await fetch(path, {
			method,
			headers,
			credentials: 'same-origin',
			body: body === undefined ? undefined : JSON.stringify(body)
		});
	} catch {
		throw new ApiError(0, 'network_error', 'The server cannot be reached. Try again.');
	}
	const text = await response.text();
	let parsed: unknown = undefined;
	if (text) {
		try {
			parsed = JSON.parse(text);
		} catch {
			parsed = undefined;
		}
	}
	if (!response.ok) {
		throw errorFrom(response.status, parsed);
	}
	return parsed as T;
}

export const api = {
	me: () => request<Me>('GET', '/api/auth/me'),
	register: (email: string, username: string, password: string) =>
		request<{ user: RegisteredUser }>('POST', '/api/auth/register', { email, username, password }),
	login: (email: string, password: string) =>
		request<Session>('POST', '/api/auth/login', { email, password }),
	logout: () => request<{ signed_out: boolean }>('POST', '/api/auth/logout'),

	walletMessage: (network: Network, address: string) =>
		request<AuthMessage>(
			'GET',
			`/api/auth/wallet/auth-message?network=${encodeURIComponent(network)}&address=${encodeURIComponent(address)}`
		),
	walletLogin: (signed: SignedMessage) =>
		request<Session>('POST', '/api/auth/wallet/login', signed),
	connectWallet: (network: Network, address: string) =>
		request<{ wallet: Pick<WalletRecord, 'network' | 'address' | 'verified'> }>(
			'POST',
			'/api/wallets/connect',
			{ network, address }
		),
	verifyWallet: (signed: SignedMessage) =>
		request<{ wallet: Pick<WalletRecord, 'network' | 'address' | 'verified'> }>(
			'POST',
			'/api/wallets/verify',
			signed
		),
	myWallets: () => request<{ wallets: WalletRecord[] }>('GET', '/api/wallets/my-wallets'),

	plans: () => request<{ plans: Plan[] }>('GET', '/api/subscriptions/plans'),
	mySubscription: () =>
		request<{ subscription: PlatformSubscription }>('GET', '/api/subscriptions/my-subscription'),
	subscribe: (plan: PlanId, network?: Network) =>
		request<{ subscription: PlatformSubscription; payment?: Payment }>(
			'POST',
			'/api/subscriptions/create',
			network ? { plan, network } : { plan }
		),
	planUsage: () => request<PlanUsage>('GET', '/api/plan/usage'),

	apiKey: () => request<ApiKeyStatus>('GET', '/api/account/api-key'),
	createApiKey: () => request<CreatedApiKey>('POST', '/api/account/api-key', {}),

	chatModels: () => request<{ models: ChatModel[] }>('GET', '/api/chat/models'),
	conversations: (q?: string) =>
		request<{ conversations: ConversationSummary[] }>(
			'GET',
			q ? `/api/conversations?q=${encodeURIComponent(q)}` : '/api/conversations'
		),
	createConversation: (conversation: NewConversation) =>
		request<Conversation>('POST', '/api/conversations', conversation),
	conversation: (id: string) =>
		request<Conversation>('GET', `/api/conversations/${encodeURIComponent(id)}`),
	updateConversation: (id: string, changes: ConversationChanges) =>
		request<Conversation>('PATCH', `/api/conversations/${encodeURIComponent(id)}`, changes),
	deleteConversation: (id: string) =>
		request<undefined>('DELETE', `/api/conversations/${encodeURIComponent(id)}`),
	receipt: (requestId: string) =>
		request<Receipt>('GET', `/api/receipts/${encodeURIComponent(requestId)}`),

	paymentNetworks: () => request<{ networks: PaymentChain[] }>('GET', '/api/payments/networks'),
	createPayment: (type: PaymentType, network: Network, amount: Money, reference: string) =>
		request<{ payment: Payment }>('POST', '/api/payments/create', {
			type,
			network,
			amount,
			reference
		}),
	verifyPayment: (paymentId: string, txHash: string) =>
		request<VerifyAnswer>('POST', '/api/payments/verify', {
			payment_id: paymentId,
			tx_hash: txHash
		}),
	payment: (paymentId: string) =>
		request<{ payment: Payment }>('GET', `/api/payments/${encodeURIComponent(paymentId)}`),

	marketplace: (filter: MarketplaceFilter = {}) =>
		request<ServicesPage>('GET', `/api/marketplace/marketplace${query(filter)}`),
	service: (id: string) =>
		request<{ service: Service }>('GET', `/api/marketplace/${encodeURIComponent(id)}`),
	subscribeToService: (id: string, network: Network, credit?: Money) =>
		request<Subscribed>(
			'POST',
			`/api/marketplace/${encodeURIComponent(id)}/subscribe`,
			credit ? { network, credit } : { network }
		),
	myApiSubscriptions: () =>
		request<{ subscriptions: ApiSubscription[] }>('GET', '/api/marketplace/my-subscriptions'),
	apiSubscriptionUsage: (id: string) =>
		request<SubscriptionUsage>(
			'GET',
			`/api/marketplace/subscriptions/${encodeURIComponent(id)}/usage`
		),
	regenerateSubscriptionKey: (id: string) =>
		request<{ subscription_id: string; api_key: string }>(
			'POST',
			`/api/marketplace/subscriptions/${encodeURIComponent(id)}/regenerate-key`,
			{}
		),
	cancelApiSubscription: (id: string) =>
		request<{ subscription: ApiSubscription }>(
			'POST',
			`/api/marketplace/subscriptions/${encodeURIComponent(id)}/cancel`,
			{}
		),

	model: (id: string) => request<{ model: Model }>('GET', `/api/models/${encodeURIComponent(id)}`),
	/** Which inference nodes serve the model now, or why it waits (owners and group members). */
	modelPlacement: (id: string) =>
		request<ModelPlacementAnswer>('GET', `/api/models/${encodeURIComponent(id)}/placement`),
	myModels: () => request<{ models: Model[] }>('GET', '/api/models/my-models'),
	publishing: (id: string) =>
		request<Publishing>('GET', `/api/publishing/model/${encodeURIComponent(id)}/publishing`),
	publish: (id: string, paymentId?: string) =>
		request<{ model: Model }>(
			'POST',
			`/api/publishing/model/${encodeURIComponent(id)}/publish`,
			paymentId ? { payment_id: paymentId } : {}
		),
	payListingFee: (id: string, paymentId: string) =>
		request<{ model: Model }>(
			'POST',
			`/api/publishing/model/${encodeURIComponent(id)}/listing-fee`,
			{ payment_id: paymentId }
		),
	myServices: () => request<{ services: Service[] }>('GET', '/api/marketplace/my-services'),
	createService: (service: NewService) =>
		request<{ service: Service }>('POST', '/api/marketplace/create', service),
	search: (filter: SearchFilter = {}) =>
		request<SearchPage>('GET', `/api/marketplace/search${query(filter)}`),
	marketplaceModel: (id: string) =>
		request<MarketplaceModel>('GET', `/api/marketplace/models/${encodeURIComponent(id)}`),
	buyModel: (id: string, network: Network) =>
		request<{ model_id: string; price: Money; payment: Payment }>(
			'POST',
			`/api/models/${encodeURIComponent(id)}/buy`,
			{ network }
		),
	setSalePrice: (id: string, price: Money | null) =>
		request<{ model_id: string; sale_price: Money | null }>(
			'PUT',
			`/api/models/${encodeURIComponent(id)}/sale`,
			{ price }
		),
	renewSubscription: (id: string, network: Network) =>
		request<SubscriptionPayment>(
			'POST',
			`/api/marketplace/subscriptions/${encodeURIComponent(id)}/renew`,
			{ network }
		),
	topUpSubscription: (id: string, amount: Money, network: Network) =>
		request<SubscriptionPayment>(
			'POST',
			`/api/marketplace/subscriptions/${encodeURIComponent(id)}/top-up`,
			{ amount, network }
		),
	myGroups: () =>
		request<{ groups: { group: Group; role: GroupRole }[] }>('GET', '/api/groups/my-groups'),
	group: (id: string) =>
		request<{ group: Group; members: GroupMember[] }>(
			'GET',
			`/api/groups/${encodeURIComponent(id)}`
		),
	createGroup: (name: string, description: string) =>
		request<{ group: Group; members: GroupMember[] }>('POST', '/api/groups', { name, description }),
	addGroupMember: (id: string, userId: string, role: GroupRole) =>
		request<unknown>('POST', `/api/groups/${encodeURIComponent(id)}/members`, {
			user_id: userId,
			role
		}),
	changeGroupRole: (id: string, userId: string, role: GroupRole) =>
		request<unknown>(
			'PUT',
			`/api/groups/${encodeURIComponent(id)}/members/${encodeURIComponent(userId)}`,
			{ role }
		),
	removeGroupMember: (id: string, userId: string) =>
		request<unknown>(
			'DELETE',
			`/api/groups/${encodeURIComponent(id)}/members/${encodeURIComponent(userId)}`
		),
	transferGroup: (id: string, newOwnerId: string) =>
		request<unknown>('POST', `/api/groups/${encodeURIComponent(id)}/transfer-ownership`, {
			new_owner_id: newOwnerId
		}),
	modelSplit: (modelId: string) =>
		request<ModelSplit>('GET', `/api/group-revenue/model/${encodeURIComponent(modelId)}/split`),
	setModelSplit: (modelId: string, shares: { user_id: string; percent: string }[]) =>
		request<ModelSplit>('POST', `/api/group-revenue/model/${encodeURIComponent(modelId)}/split`, {
			shares
		}),
	importModel: (source: {
		repo: string;
		filename: string;
		revision?: string;
		name?: string;
		description?: string;
		tags?: string[];
		group_id?: string;
	}) => request<{ model: Model }>('POST', '/api/models/import', source),
	updateService: (id: string, changes: Partial<NewService> & { active?: boolean }) =>
		request<{ service: Service }>('PUT', `/api/marketplace/${encodeURIComponent(id)}`, changes)
};

export interface NewService {
	model_id: string;
	name: string;
	description?: string;
	pricing: Pricing;
	rate_limits?: RateLimits;
	included_in_plans?: boolean;
}

/** `?a=1&b=x` of the fields that are set (empty strings and undefined are left out). */
export function query(params: object): string {
	const search = new URLSearchParams();
	for (const [key, value] of Object.entries(params)) {
		if (value !== undefined && value !== null && value !== '') {
			search.set(key, String(value));
		}
	}
	const text = search.toString();
	return text ? `?${text}` : '';
}

export interface ModelUploadMeta {
	name: string;
	description?: string;
	/** Comma-separated on the wire. */
	tags?: string[];
	group_id?: string;
	filename?: string;
}

export type GroupRole = 'OWNER' | 'ADMIN' | 'MEMBER' | 'VIEWER';

export interface Group {
	group_id: string;
	name: string;
	description: string;
	owner_id: string;
	created_at: string;
}

export interface GroupMember {
	user_id: string;
	role: GroupRole;
	joined_at: string;
}

/** A revenue split: percentages as the server writes them ("33.33"), never parsed to floats. */
export interface RevenueSplit {
	version: number;
	effective_from: string;
	set_by: string;
	set_at: string;
	shares: { user_id: string; percent: string }[];
}

export interface ModelSplit {
	model_id: string;
	group_id: string;
	current: RevenueSplit | null;
	pending: RevenueSplit | null;
}

/** A model upload in flight: its answer, and a way to stop it. */
export interface Upload {
	done: Promise<{ model: Model }>;
	abort(): void;
}

/**
 * `POST /api/models` with the file as the raw body. XMLHttpRequest, not fetch, because only it
 * reports upload progress; the browser streams the File from disk, the page never reads it
 * into memory. `onprogress` gets bytes sent and the total.
 */
export function uploadModel(
	file: File,
	meta: ModelUploadMeta,
	onprogress: (sent: number, total: number) => void
): Upload {
	const xhr = new XMLHttpRequest();
	const done = new Promise<{ model: Model }>((resolve, reject) => {
		const params = query({
			name: meta.name,
			description: meta.description,
			tags: meta.tags?.join(','),
			group_id: meta.group_id,
			filename: meta.filename ?? file.name
		});
		xhr.open('POST', `/api/models${params}`);
		xhr.withCredentials = true;
		xhr.setRequestHeader('Accept', 'application/json');
		xhr.setRequestHeader(CSRF_HEADER, '1');
		xhr.setRequestHeader('Idempotency-Key', crypto.randomUUID());
		xhr.setRequestHeader('Content-Type', 'application/octet-stream');
		xhr.upload.onprogress = (event) => {
			onprogress(event.loaded, event.lengthComputable ? event.total : file.size);
		};
		xhr.onload = () => {
			let body: unknown = undefined;
			try {
				body = xhr.responseText ? JSON.parse(xhr.responseText) : undefined;
			} catch {
				body = undefined;
			}
			if (xhr.status >= 200 && xhr.status < 300) {
				resolve(body as { model: Model });
			} else {
				reject(errorFrom(xhr.status, body));
			}
		};
		xhr.onerror = () =>
			reject(new ApiError(0, 'network_error', 'The upload was cut off. Try again.'));
		xhr.onabort = () => reject(new ApiError(0, 'aborted', 'The upload was stopped.'));
		xhr.send(file);
	});
	return { done, abort: () => xhr.abort() };
}

/** A model's verified download (a GET: the session cookie is enough). */
export function modelDownloadUrl(id: string): string {
	return `/api/models/${encodeURIComponent(id)}/download`;
}

/** The download link of a conversation's export (a GET: the cookie is enough). */
export function exportUrl(id: string, format: ExportFormat): string {
	return `/api/conversations/${encodeURIComponent(id)}/export?format=${format}`;
}

/** Whether two entitlements are the same payer. */
export function sameEntitlement(a: Entitlement, b: Entitlement): boolean {
	return a.kind === 'plan'
		? b.kind === 'plan' && a.plan === b.plan
		: b.kind === 'subscription' && a.subscription_id === b.subscription_id;
}

/** A message for a person from any error a call can throw. */
export function describeError(error: unknown): string {
	if (error instanceof ApiError) {
		return error.message;
	}
	if (error instanceof Error) {
		return error.message;
	}
	return 'Something went wrong.';
}

// ---- the fee schedule (admin: /admin/fees) ------------------------------------------------------

export type FeePaymentType =
	| 'platform_subscription'
	| 'api_subscription'
	| 'job'
	| 'model_sale'
	| 'publishing_fee'
	| 'listing_fee';

export const FEE_PAYMENT_TYPES: FeePaymentType[] = [
	'platform_subscription',
	'api_subscription',
	'job',
	'model_sale',
	'publishing_fee',
	'listing_fee'
];

export interface FeeRates {
	platform_percent: Record<FeePaymentType, number>;
	publishing_fee: Money;
	listing_fee: Money;
	compute_per_1k_tokens: Money | null;
}

export interface FeeSchedule extends FeeRates {
	version: number;
	effective_from: string;
}

export interface FeeVersion extends FeeSchedule {
	state: 'in_force' | 'adopted' | 'superseded';
}

export interface FeeProposal {
	proposal_id: string;
	state: 'proposed' | 'adopted' | 'withdrawn';
	version: number | null;
	effective_from: string;
	rates: FeeRates;
	proposed_by: string;
	proposed_at: string;
}

export interface FeeBook {
	now: string;
	in_force: number;
	versions: FeeVersion[];
	proposals: FeeProposal[];
}

/** What a proposal changes; absent fields keep the latest version's. */
export interface FeeRatesChange {
	platform_percent?: Partial<Record<FeePaymentType, number>>;
	publishing_fee?: Money;
	listing_fee?: Money;
	compute_per_1k_tokens?: Money;
}

export interface FeesWhatIfSide {
	fee_schedule_versions: number[];
	pool_total: Money;
	group_api_total: Money;
	platform_fee: Money;
	platform_fees: Partial<Record<FeePaymentType, Money>>;
}

export interface FeesWhatIf {
	month: string;
	proposal_id: string | null;
	schedule: FeeSchedule;
	actual_matches_recorded_close: boolean;
	actual: FeesWhatIfSide;
	proposed: FeesWhatIfSide;
	models: {
		model_id: string;
		tokens: number;
		usage_percent: string;
		actual_pool_amount: Money;
		proposed_pool_amount: Money;
		actual_group_api_amount: Money;
		proposed_group_api_amount: Money;
	}[];
	/** Each node's net of the month's job settlements, as paid and re-split by the proposal's
	 * job rate. */
	nodes: { node_id: string; actual_net: Money; proposed_net: Money }[];
	creators: {
		user_id: string;
		actual_pool: Money;
		proposed_pool: Money;
		actual_group_api: Money;
		proposed_group_api: Money;
		actual_direct: Money;
		proposed_direct: Money;
		actual_total: Money;
		proposed_total: Money;
	}[];
}

export const feesApi = {
	current: () =>
		request<{ current: FeeSchedule; next: FeeSchedule | null }>('GET', '/api/fees/current'),
	book: () => request<FeeBook>('GET', '/api/admin/fees'),
	propose: (effectiveFrom: string, rates: FeeRatesChange) =>
		request<{ proposal: FeeProposal }>('POST', '/api/admin/fees/proposals', {
			effective_from: effectiveFrom,
			...rates
		}),
	adopt: (id: string) =>
		request<{ proposal: FeeProposal }>(
			'POST',
			`/api/admin/fees/proposals/${encodeURIComponent(id)}/adopt`,
			{}
		),
	withdraw: (id: string) =>
		request<{ proposal: FeeProposal }>(
			'POST',
			`/api/admin/fees/proposals/${encodeURIComponent(id)}/withdraw`,
			{}
		),
	whatIf: (proposalId: string, month?: string) =>
		request<FeesWhatIf>(
			'POST',
			'/api/admin/fees/what-if',
			month ? { proposal_id: proposalId, month } : { proposal_id: proposalId }
		)
};

// ---------- Dashboards: time series and the figures beside them ----------

export type SeriesMetric = 'requests' | 'tokens' | 'revenue' | 'fees' | 'earnings';
export type SeriesScope = 'platform' | 'model' | 'service' | 'creator' | 'node' | 'consumer';

export interface SeriesRequest {
	metric: SeriesMetric;
	scope: SeriesScope;
	bucket?: 'day' | 'month';
	/** The scope's id; `me` for creator and consumer (the default); none for platform. */
	id?: string;
	/** YYYY-MM-DD, both included. */
	from?: string;
	to?: string;
	group_by?: 'type' | 'kind' | 'model' | 'service' | 'subscription';
}

/** One bucket: its first day and the server's value (a count, or USDT text), never parsed here. */
export interface SeriesPoint {
	t: string;
	value: string;
}

export interface SeriesLine {
	key: string;
	label: string;
	points: SeriesPoint[];
}

/**
 * What a chart draws (`TimeSeriesChart`): lines of points keyed by their bucket's `t`. A
 * `minute` bucket's `t` is an RFC 3339 instant (a heartbeat sample's); `mixed` units are named
 * in each line's label.
 */
export interface ChartSeries {
	bucket: 'day' | 'month' | 'minute';
	from: string;
	to: string;
	unit: 'count' | 'usdt' | 'mixed';
	series: SeriesLine[];
}

/** `GET /api/series` (api/src/routes/series.rs): every bucket present, zero-filled. */
export interface Series {
	metric: SeriesMetric;
	bucket: 'day' | 'month';
	scope: SeriesScope;
	id: string | null;
	from: string;
	to: string;
	group_by: string | null;
	unit: 'count' | 'usdt';
	series: SeriesLine[];
}

// ---- Operating the platform (`/api/admin/*`) and money out (`/api/payouts/*`) ----

/** `users_view` as the admin reads it. */
export interface AdminUserRow {
	user_id: string;
	email: string | null;
	username: string | null;
	wallet: string | null;
	registered_at: string;
	deactivated_at: string | null;
	deactivation_reason: string | null;
}

export interface AdminUsersPage {
	users: AdminUserRow[];
	/** The search as the server applied it (trimmed); null when every account is listed. */
	q: string | null;
	page: number;
	per_page: number;
	total: number;
}

export interface RevenueTypeLine {
	type: string;
	count: number;
	gross: Money;
	platform_fee: Money;
	net: Money;
}

export interface MonthlyRevenue {
	month: string;
	total_revenue: Money;
	platform_fees: Money;
	/** What the month's close paid inference nodes out of the platform's fees. */
	compute_paid: Money;
	/** `platform_fees` less `compute_paid`. */
	platform_net: Money;
	by_type: RevenueTypeLine[];
	closed: boolean;
	digest: string | null;
}

export interface RevenueSummary {
	total_revenue: Money;
	platform_fees: Money;
	/** What monthly closes paid inference nodes out of the platform's fees. */
	compute_paid: Money;
	/** `platform_fees` less `compute_paid`. */
	platform_net: Money;
	net_to_others: Money;
	by_type: RevenueTypeLine[];
	distribution: {
		months_closed: number;
		last_closed: string | null;
		pool_distributed: Money;
		group_api_distributed: Money;
	};
	balances: {
		platform_fees: Money;
		subscription_pools_undistributed: Money;
		group_revenue_undistributed: Money;
		creator_payables: Money;
	};
}

/** A closed month as recorded (`MonthDistribution`, the fields a dashboard shows). */
export interface RecordedDistribution {
	month: string;
	closed_by: string;
	closed_at: string;
	distribution: {
		month: string;
		pool_total: Money;
		pool_distributed: Money;
		group_api_total: Money;
		tokens_total: number;
		digest: string;
		models: {
			model_id: string;
			tokens: number;
			requests: number;
			usage_percent: string;
			pool_amount: Money;
			group_api_amount: Money;
		}[];
		payouts: { user_id: string; model_id: string; source: string; amount: Money }[];
	};
}

export interface MyEarnings {
	user_id: string;
	month: string | null;
	total: Money;
	payable_balance: Money;
	by_month: {
		month: string;
		api_and_sales: Money;
		subscription_pool: Money;
		group_api: Money;
		total: Money;
	}[];
}

export interface ComputeNode {
	id: string;
	owner: string;
	name: string;
	owner_wallet: string;
	resources: {
		cpu_cores: number;
		memory_mb: number;
		disk_gb: number;
		gpus: { model: string; memory_mb: number }[];
		max_concurrent_jobs: number;
	};
	status: string;
	offline_reason: string | null;
	/** The last heartbeat (its history: `dashboards.nodeHeartbeats`). */
	last_heartbeat: NodeHeartbeat | null;
	registered_at: string;
	updated_at: string;
	/** Its share of jobs and what monthly closes paid it for the tokens it served. */
	earnings?: { payable: Money; jobs_paid: number; jobs: Money; inference: Money };
}

export interface NodeHeartbeat {
	at: string;
	metrics: {
		cpu_percent?: number;
		memory_used_mb?: number;
		disk_used_gb?: number;
		gpus?: { utilization_percent: number; memory_used_mb: number }[];
		running_jobs?: number;
	};
}

/** `GET /api/nodes/{id}/heartbeats`: one sample per minute at most, oldest first. */
export interface HeartbeatHistory {
	node_id: string;
	from: string;
	to: string;
	sample_secs: number;
	keep_secs: number;
	samples: NodeHeartbeat[];
}

export const dashboards = {
	series: (wanted: SeriesRequest) => request<Series>('GET', `/api/series${query(wanted)}`),
	monthlyRevenue: (year: number, month: number) =>
		request<MonthlyRevenue>('GET', `/api/revenue/monthly/${year}/${month}`),
	revenueSummary: () => request<RevenueSummary>('GET', '/api/revenue/summary'),
	distribution: (year: number, month: number) =>
		request<RecordedDistribution>('GET', `/api/revenue/distribution/${year}/${month}`),
	myEarnings: () => request<MyEarnings>('GET', '/api/revenue/my-earnings'),
	myNodes: () => request<{ nodes: ComputeNode[] }>('GET', '/api/nodes/my-nodes'),
	node: (id: string) =>
		request<{ node: ComputeNode }>('GET', `/api/nodes/${encodeURIComponent(id)}`),
	/** The node's heartbeat samples (its owner or an admin); by default the last 24 hours. */
	nodeHeartbeats: (id: string, range: { from?: string; to?: string } = {}) =>
		request<HeartbeatHistory>(
			'GET',
			`/api/nodes/${encodeURIComponent(id)}/heartbeats${query(range)}`
		)
};

/** `GET /api/admin/stats`: counts as the server computes them. */
export interface PlatformStats {
	users: {
		total: number;
		with_email: number;
		created_by_wallet: number;
		active_30d: number;
		deactivated: number;
	};
	plans_active: Record<string, number>;
	api_subscriptions_active: number;
	models: Record<string, number>;
	revenue_this_month: { month: string; by_type: RevenueTypeLine[] };
	wallets: { connected: number; verified: number };
	admin_wallets: number;
	groups: number;
	payments: { total: number; confirmed: number; platform_fees: Money };
	compute: {
		nodes: Record<string, number>;
		jobs: Record<string, number>;
		job_revenue: { gross: Money; platform_fee: Money; to_nodes: Money };
		job_money: { in_escrow: Money; owed_to_nodes: Money };
	};
	events: number;
}

/** `GET /api/admin/payments` filters (every field optional; dates RFC 3339). */
export interface PaymentFilter {
	type?: string;
	state?: string;
	network?: string;
	user_id?: string;
	from?: string;
	to?: string;
	page?: number;
	per_page?: number;
}

export interface AdminPaymentsPage {
	payments: Payment[];
	page: number;
	per_page: number;
	total: number;
}

export interface AdminUserDetails {
	user: AdminUserRow;
	wallets: WalletRecord[];
	plan: { plan: PlanId; starts_at: string; ends_at: string | null } | null;
	api_subscriptions: ApiSubscription[];
	models: Model[];
	groups: { group: Group; role: GroupRole }[];
	nodes: { id: string; name: string; status: string; registered_at: string }[];
	payments: Payment[];
	payments_total: number;
}

/** One model file's placement on inference nodes: its nodes, or why it waits. */
export interface ModelPlacement {
	sha256: string;
	model_ids: string[];
	memory_bytes: number;
	serving_on: string[];
	loading_on: string[];
	placed_on: string[];
	waiting: { code: string; reason: string } | null;
}

/** `GET /api/models/{id}/placement`; `placement` is null for a model not placed on nodes. */
export interface ModelPlacementAnswer {
	model_id: string;
	in_process: boolean;
	placement: ModelPlacement | null;
}

/** `GET /api/admin/placements`: which inference node serves which model, and why one waits. */
export interface Placements {
	placing: boolean;
	in_process: boolean;
	models: ModelPlacement[];
	nodes: {
		node_id: string;
		capacity_bytes: number;
		placed_bytes: number;
		placed: string[];
		failed: Record<string, string>;
	}[];
}

export interface AdminNode {
	id: string;
	owner: string;
	name: string;
	owner_wallet: string | null;
	resources: Record<string, unknown> | null;
	status: string;
	offline_reason: string | null;
	last_heartbeat: { at: string; metrics: Record<string, unknown> | null } | null;
	registered_at: string;
	updated_at: string;
}

export interface NodeJob {
	id: string;
	creator: string;
	type: string;
	price: Money;
	status: string;
	attempt: number | null;
	exit_code: number | null;
	failure_reason: string | null;
	settlement: { node_net: Money; platform_fee: Money | null; refund: Money | null } | null;
	submitted_at: string;
	ended_at: string | null;
}

export interface LedgerAccount {
	account: string;
	kind: string;
	balance: Money;
	postings: number;
}

export interface LedgerPosting {
	position: number;
	idx: number;
	payment_id: string;
	account: string;
	kind: string;
	/** Integer micro-USDT (the view's column); shown through `microsToUsdt`, never a float. */
	amount_micros: number;
	recorded_at: string;
}

/** A month's close (`MonthDistribution`): its main fields typed, the rest shown as recorded. */
export interface MonthDistribution {
	month: string;
	pool_total: Money;
	pool_distributed: Money;
	tokens_total: number;
	group_api_total: Money;
	/** The fee versions of the pool's payments. */
	fee_schedule_versions: number[];
	/** Every fee version of the month's payments and job settlements; absent in closes made
	 * before closes named them. */
	fee_schedule_versions_used?: number[];
	input_digest: string;
	digest: string;
	[field: string]: unknown;
}

export interface AuditVerdict {
	intact: boolean;
	sealed?: number;
	position?: number;
	seq?: number;
	message: string;
}

export interface AuditReplay {
	month: string;
	closed: boolean;
	matches: boolean;
	recorded_digest: string | null;
	computed: MonthDistribution;
	differences: string[];
	message: string;
}

export type PayoutState =
	'awaiting_approval' | 'awaiting_payment' | 'in_progress' | 'completed' | 'cancelled' | 'failed';

export interface Payout {
	payout_id: string;
	payable: string;
	user_id: string;
	network: Network;
	address: string;
	amount: Money;
	/** `YYYY-MM` of the close that made it; null for a withdraw. */
	month: string | null;
	state: PayoutState;
	tx_hash: string | null;
	explorer_url?: string | null;
	/** Why it waits, failed or was cancelled. */
	reason: string | null;
	requested_at: string;
	updated_at: string;
}

export interface MyPayouts {
	payouts: Payout[];
	minimum?: Money;
	approval_threshold?: Money;
}

export interface HotWallet {
	network: Network;
	address: string;
	usdt?: Money;
	gas?: string;
	transfers_gas_pays?: number;
	error?: string;
}

export interface PayoutPassReport {
	requested: number;
	sent: number;
	completed: number;
	failed: number;
	waiting: number;
}

export interface ReceiptLeaf {
	payee: string;
	wallet: string;
	amount: string;
	month: string;
}

export interface ProofStep {
	sibling: string;
	left: boolean;
}

export interface PayoutProof {
	leaf: ReceiptLeaf;
	leaf_text: string;
	proof: ProofStep[];
	root: string;
}

export interface PayoutReceipt {
	month: string;
	root: string;
	payouts: number;
}

const path = encodeURIComponent;

export const adminApi = {
	stats: () => request<PlatformStats>('GET', '/api/admin/stats'),
	payments: (filter: PaymentFilter) =>
		request<AdminPaymentsPage>('GET', `/api/admin/payments${query(filter)}`),
	/** A page of accounts; with `q`, those whose email, username or a wallet address contains it
	 * (case-insensitive, matched by the server). */
	users: (page: number, perPage = 50, q?: string) =>
		request<AdminUsersPage>('GET', `/api/admin/users${query({ q, page, per_page: perPage })}`),
	user: (id: string) => request<AdminUserDetails>('GET', `/api/admin/users/${path(id)}`),
	deactivate: (id: string, reason: string) =>
		request<{ user: AdminUserRow }>('POST', `/api/admin/users/${path(id)}/deactivate`, {
			reason
		}),
	reactivate: (id: string) =>
		request<{ user: AdminUserRow }>('POST', `/api/admin/users/${path(id)}/reactivate`, {}),
	nodes: () =>
		request<{ nodes: AdminNode[]; by_status: Record<string, number> }>('GET', '/api/admin/nodes'),
	nodeJobs: (id: string, page = 1) =>
		request<{ node: AdminNode; jobs: NodeJob[]; page: number; per_page: number; total: number }>(
			'GET',
			`/api/admin/nodes/${path(id)}/jobs${query({ page })}`
		),
	placements: () => request<Placements>('GET', '/api/admin/placements'),
	setNodeActive: (id: string, active: boolean) =>
		request<unknown>(
			'POST',
			`/api/admin/nodes/${path(id)}/${active ? 'activate' : 'deactivate'}`,
			{}
		),
	ledger: () =>
		request<{ accounts: LedgerAccount[]; sum_micros: string }>('GET', '/api/admin/ledger'),
	ledgerAccount: (account: string) =>
		request<{ account: string; postings: LedgerPosting[] }>(
			'GET',
			`/api/admin/ledger/${path(account)}`
		),
	close: (year: number, month: number) =>
		request<{ closed: MonthDistribution }>('POST', `/api/revenue/close/${year}/${month}`, {}),
	distribution: (year: number, month: number) =>
		request<{
			month: string;
			closed_by: string;
			closed_at: string;
			distribution: MonthDistribution;
		}>('GET', `/api/revenue/distribution/${year}/${month}`),
	auditVerify: () => request<AuditVerdict>('POST', '/api/admin/audit/verify', {}),
	auditReplay: (year: number, month: number) =>
		request<AuditReplay>('POST', `/api/admin/audit/replay/${year}/${month}`, {}),
	payouts: (state?: PayoutState) =>
		request<{ payouts: Payout[] }>('GET', `/api/admin/payouts${query({ state })}`),
	approvePayout: (id: string) =>
		request<{ payout: Payout }>('POST', `/api/admin/payouts/${path(id)}/approve`, {}),
	cancelPayout: (id: string, reason: string) =>
		request<{ payout: Payout }>('POST', `/api/admin/payouts/${path(id)}/cancel`, { reason }),
	hotWallets: () => request<{ hot_wallets: HotWallet[] }>('GET', '/api/admin/payouts/hot-wallet'),
	runPayouts: () => request<PayoutPassReport>('POST', '/api/admin/payouts/run', {})
};

export const payoutsApi = {
	mine: () => request<MyPayouts>('GET', '/api/payouts/mine'),
	withdraw: () => request<{ payouts: Payout[] }>('POST', '/api/payouts/withdraw', {}),
	choosePayoutWallet: (network: Network, address: string) =>
		request<{ payout_wallet: { network: Network; address: string } }>(
			'POST',
			'/api/wallets/payout',
			{ network, address }
		),
	receipt: (month: string) => {
		const [year, number] = month.split('-');
		return request<PayoutReceipt>(
			'GET',
			`/api/payouts/receipts/${path(year ?? '')}/${Number(number ?? '0')}`
		);
	},
	proof: (id: string) => request<PayoutProof>('GET', `/api/payouts/${path(id)}/proof`)
};
