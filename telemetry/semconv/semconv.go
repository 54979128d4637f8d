package semconv

// Instrumentation scope names. Each Chassis package asks for its meter and tracer with its own scope,
// so the origin of every metric stays visible (otel_scope_name in Prometheus).
const (
	ScopeTelemetry  = "github.com/cloudchassis/kit/telemetry"
	ScopeResilience = "github.com/cloudchassis/kit/resilience"
	ScopeDiscovery  = "github.com/cloudchassis/kit/discovery"
	ScopeLB         = "github.com/cloudchassis/kit/discovery/lb"
	// ScopeLock is also the scope of coordination/election's metrics: an election is a lock, and
	// its metrics are the lock's (with the election key as AttrLockKey).
	ScopeLock      = "github.com/cloudchassis/kit/coordination/lock"
	ScopeDynconfig = "github.com/cloudchassis/kit/coordination/dynconfig"
	ScopeAuth      = "github.com/cloudchassis/kit/auth"
	ScopeGuard     = "github.com/cloudchassis/kit/guard"
)

// HTTP metrics from the OpenTelemetry semantic conventions, emitted by telemetry.Handler and
// telemetry.Transport.
const (
	// HTTPServerRequestDuration is a histogram in seconds with AttrHTTPRoute, AttrHTTPRequestMethod,
	// AttrHTTPResponseStatusCode, AttrURLScheme, AttrNetworkProtocolVersion and AttrErrorType (5xx only).
	HTTPServerRequestDuration = "http.server.request.duration"
	// HTTPServerActiveRequests is an up-down counter of in-flight requests with AttrHTTPRequestMethod
	// and AttrURLScheme.
	HTTPServerActiveRequests = "http.server.active_requests"
	// HTTPClientRequestDuration is a histogram in seconds with AttrHTTPRequestMethod,
	// AttrHTTPResponseStatusCode, AttrServerAddress, AttrServerPort, AttrURLScheme, AttrURLTemplate
	// (when the caller named one) and AttrErrorType (failures and 5xx).
	HTTPClientRequestDuration = "http.client.request.duration"
)

// Chassis metrics. Units follow UCUM as OpenTelemetry requires ("s" for seconds, "{request}" for a
// count of requests). Counters are monotonic; "gauge" means an asynchronous or synchronous gauge.
const (
	// MetricClientAttempts is an asynchronous (observable) counter of attempts sent ({attempt}), with
	// AttrPeerService and AttrAttemptKind. Not a histogram of attempts per call: recording one per
	// call costs ~0.4 µs in the OpenTelemetry SDK, an atomic add ~5 ns (docs/telemetry.md).
	MetricClientAttempts = "chassis.client.attempts"
	// MetricRetryAttempts counts retries sent (the first attempt excluded) ({attempt}), with
	// AttrPeerService and AttrRetryReason. A re-pick after an open instance breaker counts too
	// (ReasonBreakerOpen): it is an extra attempt, although the refused one sent nothing.
	MetricRetryAttempts = "chassis.client.retries"
	// MetricRetryBudgetTokens is a gauge of retries the budget would allow right now ({attempt}),
	// with AttrPeerService.
	MetricRetryBudgetTokens = "chassis.client.retry_budget.tokens"
	// MetricHedgesSent counts hedged (speculative) requests sent ({request}) with AttrPeerService.
	MetricHedgesSent = "chassis.client.hedges.sent"
	// MetricHedgesWon counts hedged requests whose response was used ({request}) with AttrPeerService.
	MetricHedgesWon = "chassis.client.hedges.won"
	// MetricClientRejections counts calls refused locally before reaching the network ({request}),
	// with AttrPeerService and AttrRejectionReason.
	MetricClientRejections = "chassis.client.rejections"

	// MetricBreakerState is a gauge that is 1 for the current state of a breaker and 0 for the others
	// ({state}), with AttrPeerService, AttrBreakerInstance and AttrBreakerState: summing over states
	// gives the number of breakers, and a Prometheus query needs no value mapping. Breakers of
	// instances that left the snapshot disappear from it once garbage collected.
	MetricBreakerState = "chassis.breaker.state"
	// MetricBreakerTransitions counts state changes ({transition}) with AttrPeerService,
	// AttrBreakerFrom and AttrBreakerTo.
	MetricBreakerTransitions = "chassis.breaker.transitions"

	// MetricLBEjections counts outlier ejections ({ejection}) with AttrPeerService and
	// AttrEjectionReason.
	MetricLBEjections = "chassis.lb.ejections"
	// MetricLBEjected is a gauge of instances currently ejected ({instance}) with AttrPeerService.
	MetricLBEjected = "chassis.lb.ejected"

	// MetricServerShed counts requests refused by the adaptive load shedder ({request}) with
	// AttrHTTPRoute and AttrPriority.
	MetricServerShed = "chassis.server.shed"
	// MetricServerRateLimited counts requests refused by the rate limiter ({request}) with
	// AttrHTTPRoute.
	MetricServerRateLimited = "chassis.server.rate_limited"
	// MetricServerBodyRefused counts requests refused by guard's BodyGate before admission
	// ({request}) with AttrRejectionReason (ReasonBodyTooSlow: 408, the body fell below the minimum
	// rate; ReasonBodyPeerLimit: 429, the client had too many bodies in progress).
	MetricServerBodyRefused = "chassis.server.body.refused"
	// MetricServerConcurrencyLimit is a gauge of the adaptive concurrency limit ({request}).
	MetricServerConcurrencyLimit = "chassis.server.concurrency.limit"

	// MetricDiscoverySnapshotAge is a gauge of the age of the instance list in use (s), with
	// AttrPeerService. It grows while the registry is unreachable and the last good list is served.
	MetricDiscoverySnapshotAge = "chassis.discovery.snapshot.age"
	// MetricDiscoveryInstances is a gauge of healthy instances in the current snapshot ({instance})
	// with AttrPeerService.
	MetricDiscoveryInstances = "chassis.discovery.instances"
	// MetricDiscoveryErrors counts failed registry queries ({error}) with AttrPeerService and
	// AttrErrorType.
	MetricDiscoveryErrors = "chassis.discovery.errors"
	// MetricDiscoveryUpdates counts snapshots delivered to watchers ({update}) with AttrPeerService.
	MetricDiscoveryUpdates = "chassis.discovery.updates"

	// MetricAuthJWKSFetches counts JWKS fetches ({fetch}), with AttrErrorType on failures
	// (ReasonTimeout, ReasonConnection, ReasonInvalidKeySet, or the HTTP status code).
	MetricAuthJWKSFetches = "chassis.auth.jwks.fetches"
	// MetricAuthJWKSKeys is a gauge of the usable keys of the JWKS in use ({key}); 0 until one loads.
	MetricAuthJWKSKeys = "chassis.auth.jwks.keys"
	// MetricAuthJWKSKeysRejected is a gauge of the signature keys of the JWKS in use that were
	// refused: too short, off their curve, malformed ({key}).
	MetricAuthJWKSKeysRejected = "chassis.auth.jwks.keys.rejected"
	// MetricAuthJWKSAge is a gauge of the time since the JWKS in use was fetched (s); absent until one
	// loads. It grows while fetches fail and the last good set is served.
	MetricAuthJWKSAge = "chassis.auth.jwks.age"
)

// Units of the metrics above, in UCUM as OpenTelemetry requires.
const (
	UnitSeconds    = "s"
	UnitAttempt    = "{attempt}"
	UnitRequest    = "{request}"
	UnitState      = "{state}"
	UnitTransition = "{transition}"
	UnitEjection   = "{ejection}"
	UnitInstance   = "{instance}"
	UnitError      = "{error}"
	UnitUpdate     = "{update}"
	UnitFetch      = "{fetch}"
	UnitKey        = "{key}"
)

// Attribute keys. Standard OpenTelemetry keys where one exists, "chassis." otherwise.
const (
	AttrHTTPRoute              = "http.route"
	AttrHTTPRequestMethod      = "http.request.method"
	AttrHTTPResponseStatusCode = "http.response.status_code"
	AttrURLScheme              = "url.scheme"
	AttrURLTemplate            = "url.template"
	AttrServerAddress          = "server.address"
	AttrServerPort             = "server.port"
	AttrNetworkProtocolVersion = "network.protocol.version"
	// AttrErrorType is a low-cardinality error class: an HTTP status code as a string, one of the
	// reason values below, or "_OTHER".
	AttrErrorType = "error.type"
	// AttrPeerService is the logical name of the called or discovered service (never an address).
	AttrPeerService = "peer.service"

	AttrAttemptKind     = "chassis.attempt.kind"     // AttemptFirst | AttemptRetry | AttemptHedge
	AttrRetryReason     = "chassis.retry.reason"     // Reason* values
	AttrRejectionReason = "chassis.rejection.reason" // Reason* values
	AttrBreakerInstance = "chassis.breaker.instance" // instance id, or BreakerInstanceService
	AttrBreakerState    = "chassis.breaker.state"    // BreakerClosed | BreakerOpen | BreakerHalfOpen
	AttrBreakerFrom     = "chassis.breaker.from"     // a breaker state
	AttrBreakerTo       = "chassis.breaker.to"       // a breaker state
	AttrEjectionReason  = "chassis.ejection.reason"  // Reason* values
	AttrPriority        = "chassis.priority"         // PriorityCritical | PriorityDefault | PrioritySheddable
	AttrAttempt         = "chassis.attempt"          // attempt number, 1-based (span events only)
	AttrBackoff         = "chassis.backoff"          // chosen backoff in seconds (span events only)
	AttrInstance        = "chassis.instance"         // instance id or address (span events only: unbounded)
)

// Attribute values. Each metric's allowed values are listed in docs/telemetry.md; a new value is a
// change of the scheme and goes there first.
const (
	AttemptFirst = "first" // the first attempt of a call
	AttemptRetry = "retry" // an attempt sent after a failed one
	AttemptHedge = "hedge" // a speculative attempt sent while an earlier one is still out

	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"
	// BreakerInstanceService is the AttrBreakerInstance of a breaker for a whole service (dependency).
	BreakerInstanceService = "service"

	ReasonStatus5xx        = "status_5xx"         // retry: a retryable 5xx response
	ReasonStatus429        = "status_429"         // retry: too many requests (Retry-After honoured)
	ReasonTimeout          = "timeout"            // retry or rejection: the attempt or deadline expired
	ReasonConnection       = "connection"         // retry: dial or connection reset
	ReasonBreakerOpen      = "breaker_open"       // rejection; retry: a re-pick after an open instance breaker (nothing sent)
	ReasonBudgetExhausted  = "budget_exhausted"   // rejection: retry budget spent
	ReasonBulkheadFull     = "bulkhead_full"      // rejection
	ReasonNoInstances      = "no_instances"       // rejection: discovery returned nothing usable
	ReasonDeadlineTooShort = "deadline_too_short" // rejection: less time left than the minimum attempt
	ReasonConsecutiveError = "consecutive_errors" // ejection
	ReasonLatency          = "latency"            // ejection: latency outlier
	ReasonSuccessRate      = "success_rate"       // ejection: success-rate outlier
	ReasonBodyTooSlow      = "body_too_slow"      // server body refusal: below the minimum rate (408)
	ReasonBodyPeerLimit    = "body_peer_limit"    // server body refusal: too many bodies from one client (429)
	ReasonInvalidKeySet    = "invalid_key_set"    // JWKS fetch: not a key set, too large, or no usable key

	PriorityCritical  = "critical"
	PriorityDefault   = "default"
	PrioritySheddable = "sheddable"
)

// SpanAttempt names the span of one attempt of a client call (resilience, with a tracer provider):
// an internal span under the call's client span, only when the call is sampled, with
// AttrPeerService, AttrInstance (the instance id, when a balancer picked it),
// AttrHTTPResponseStatusCode, and error status on an error or a 5xx answer.
const SpanAttempt = "chassis.attempt"

// Span-event names, added to the span of the client call or server request they happened in.
const (
	EventRetry             = "chassis.retry"              // AttrAttempt, AttrRetryReason, AttrBackoff
	EventHedge             = "chassis.hedge"              // AttrAttempt
	EventHedgeWon          = "chassis.hedge.won"          // none: a hedge's response was used
	EventRejected          = "chassis.rejected"           // AttrRejectionReason, AttrInstance (when known)
	EventBreakerTransition = "chassis.breaker.transition" // AttrBreakerFrom, AttrBreakerTo, AttrInstance
	EventEjection          = "chassis.ejection"           // AttrEjectionReason, AttrInstance
	EventShed              = "chassis.shed"               // AttrPriority
	EventRateLimited       = "chassis.rate_limited"       // none
	EventFallback          = "chassis.fallback"           // AttrRejectionReason or AttrErrorType
)

// Coordination metrics, emitted by coordination/lock (and so by coordination/election, whose
// leadership is a lock) under ScopeLock, and by coordination/dynconfig under ScopeDynconfig.
//
// Every lock metric carries AttrLockKey, every dynconfig metric AttrConfigPrefix: the Consul key or
// KV prefix the program passed to lock.New, election.New or dynconfig.New. Both are chosen in code,
// one per Lock, election or Config, never from request data, so their cardinality is the handful
// of locks and prefixes a service creates. A program that builds keys from data (one lock per
// customer, say) multiplies every lock series by them.
const (
	// MetricLockAcquisitions counts successful Acquire calls ({acquisition}) with AttrLockKey.
	MetricLockAcquisitions = "chassis.lock.acquisitions"
	// MetricLockAcquireDuration is a histogram of the time Acquire waited before it got the lock
	// (s), with AttrLockKey.
	MetricLockAcquireDuration = "chassis.lock.acquire.duration"
	// MetricLockLosses counts locks lost while held ({loss}), with AttrLockKey and AttrLockReason.
	MetricLockLosses = "chassis.lock.losses"
	// MetricLockHeld is an up-down counter that is 1 while this process holds the lock ({lock}),
	// with AttrLockKey.
	MetricLockHeld = "chassis.lock.held"
	// MetricLockErrors counts failed calls to Consul ({error}), with AttrLockKey and
	// AttrLockOperation. Session creation, renewal, reads and acquires are retried with backoff; a
	// failed release or session destroy is not: the session then expires after its TTL.
	MetricLockErrors = "chassis.lock.errors"

	// MetricConfigReloads counts KV contents evaluated ({reload}), with AttrConfigPrefix and
	// AttrConfigOutcome.
	MetricConfigReloads = "chassis.config.reloads"
	// MetricConfigInvalid is a gauge that is 1 while the newest KV content is rejected and 0
	// otherwise ({state}), with AttrConfigPrefix: alert on it.
	MetricConfigInvalid = "chassis.config.invalid"
	// MetricConfigWatchErrors counts failed KV queries, each followed by a backoff ({error}), with
	// AttrConfigPrefix.
	MetricConfigWatchErrors = "chassis.config.watch.errors"
)

// Units of the coordination metrics, beside UnitSeconds, UnitState and UnitError.
const (
	UnitAcquisition = "{acquisition}"
	UnitLoss        = "{loss}"
	UnitLock        = "{lock}"
	UnitReload      = "{reload}"
)

// Coordination attribute keys.
const (
	AttrLockKey       = "chassis.lock.key"       // the lock's Consul key, chosen by the program (bounded, see above)
	AttrLockReason    = "chassis.lock.reason"    // ReasonSessionInvalidated | ReasonRenewTimeout | ReasonKeyLost
	AttrLockOperation = "chassis.lock.operation" // Operation* values
	AttrConfigPrefix  = "chassis.config.prefix"  // the KV prefix, chosen by the program (bounded, see above)
	AttrConfigOutcome = "chassis.config.outcome" // OutcomeApplied | OutcomeUnchanged | OutcomeRejected
)

// Coordination attribute values.
const (
	// ReasonSessionInvalidated: Consul no longer knows the lock's session (TTL expired server-side,
	// node failed, or destroyed by an operator).
	ReasonSessionInvalidated = "session_invalidated"
	// ReasonRenewTimeout: no renewal succeeded for a whole TTL, so Consul may have expired the
	// session; the holder gives up first.
	ReasonRenewTimeout = "renew_timeout"
	// ReasonKeyLost: the key was deleted, released or taken by another session while the session lived.
	ReasonKeyLost = "key_lost"

	OperationCreateSession  = "create_session"  // lock error: creating the session for a tenure
	OperationRenewSession   = "renew_session"   // lock error: renewing the session
	OperationAcquire        = "acquire"         // lock error: the acquire write
	OperationRead           = "read"            // lock error: a consistent read of the key
	OperationRelease        = "release"         // lock error: the release write
	OperationDestroySession = "destroy_session" // lock error: destroying the session after a tenure

	OutcomeApplied   = "applied"   // config reload: valid, and at least one variable changed
	OutcomeUnchanged = "unchanged" // config reload: valid, no variable changed
	OutcomeRejected  = "rejected"  // config reload: invalid; the previous configuration stays
)

// Connection metrics of the client transport chassis builds for each dependency, under
// ScopeChassis. Divide the rate of MetricClientConnectionsOpened by the rate of
// HTTPClientRequestDuration's count to get new connections per request: near 0 when connections
// are reused, near 1 when every call dials.
const (
	// ScopeChassis is the instrumentation scope of what package chassis measures itself.
	ScopeChassis = "github.com/cloudchassis/kit/chassis"
	// MetricClientConnectionsOpened counts connections dialled to instances, TLS handshake done
	// ({connection}), with AttrPeerService and AttrURLScheme (http or https). Failed dials are not
	// counted here; they fail the attempt (see MetricRetryAttempts' ReasonConnection).
	MetricClientConnectionsOpened = "chassis.client.connections.opened"
	// MetricClientConnectionsOpen is an up-down counter of the connections to instances currently
	// open, idle or in use ({connection}), with AttrPeerService.
	MetricClientConnectionsOpen = "chassis.client.connections.open"
	// UnitConnection is the unit of the connection metrics.
	UnitConnection = "{connection}"
)
