//! The agent's HTTP endpoints: Prometheus metrics on `--metrics-addr`, and the management API
//! on `--api-addr` (health, status, flows, alerts, incidents, the lists, the model, and an
//! OpenAPI description of all of it).
//!
//! The API works on the same pinned maps as the CLI and on the agent's own store (one
//! connection per process, see [`Store`]), so a request does exactly what the matching `astra`
//! command would, and sees the in-memory store when the agent has fallen back to one.
use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::info;

use crate::{
    addr::{parse_net, parse_ttl},
    agent::{status::AgentStatus, token::Role},
    clock::{now_ms, now_unix},
    dataplane::{AttachedMode, maps::PinnedMaps},
    error::Error,
    features::FEATURE_NAMES,
    lists::Lists,
    store::{Half, ListKind, Protection, Rate, Store},
};

pub fn metrics_router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::sink::metrics::render(&registry),
                )
                    .into_response()
            }
        }),
    )
}

/// Connections each listener serves at once; one more is closed as soon as it is accepted, so
/// a flood of idle clients cannot use up the agent's descriptors (about 20k idle half-sent
/// requests used to take /metrics and /healthz down with the API).
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may stay open, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Serves `router` on `listener` with HTTP/1.1, each connection bounded in number, in time to
/// send its headers, and in lifetime (see the constants above).
pub async fn serve(listener: TcpListener, router: Router, what: &'static str) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tracing::warn!(error = %e, "{what} server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(req.map(axum::body::Body::new))
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The agent's store (a shared handle).
    pub store: Store,
    /// Whether the API listens on a loopback address only (then Host must name loopback).
    pub loopback: bool,
    pub poll_interval: Duration,
    /// Reads need a token too (`--api-read-token`).
    pub read_token: bool,
    /// What the UI streams.
    pub live: Arc<crate::agent::live::Live>,
    /// Set by `POST /api/v1/model/train`, taken by the poll thread.
    pub train: Arc<std::sync::atomic::AtomicBool>,
    /// Failed logins posted to `/api/v1/events`, for the poll thread's next pass.
    pub logins: Arc<LoginQueue>,
    /// The models `/api/v1/predict` scores with, read from the state directory on first use.
    pub predictor: Arc<std::sync::OnceLock<Mutex<crate::detect::predict::Predictor>>>,
}

/// Failed logins reported through the API and not yet taken by a detection pass: (source,
/// login port, time on the dataplane's clock). Bounded by [`LOGIN_QUEUE_MAX`].
#[derive(Debug, Default)]
pub struct LoginQueue(Mutex<Vec<(IpAddr, u16, u64)>>);

/// Reported failed logins that may wait for the next poll; more is refused with 503.
pub const LOGIN_QUEUE_MAX: usize = 100_000;
/// Events one request may carry.
pub const EVENTS_PER_REQUEST: usize = 10_000;

impl LoginQueue {
    /// Adds all of `events`, or none when they would not fit.
    pub fn push_all(&self, events: Vec<(IpAddr, u16, u64)>) -> bool {
        let mut q = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() + events.len() > LOGIN_QUEUE_MAX {
            return false;
        }
        q.extend(events);
        true
    }

    /// Everything reported since the last call.
    pub fn take(&self) -> Vec<(IpAddr, u16, u64)> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl ApiState {
    fn lists(&self) -> Result<Lists, Error> {
        Ok(Lists::from_parts(
            self.store.clone(),
            PinnedMaps::open(&self.pin_dir)?,
        ))
    }
}

/// An error response: a status and one line saying what is wrong, as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"astra\""),
            );
        }
        r
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = if e.exit_code() == 2 {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(code, e.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Error::from(e).into()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

/// Requests doing blocking work at once; the others wait their turn, so eight large reads at
/// once cannot take the agent's memory with them.
pub const MAX_BLOCKING: usize = 8;

/// Runs blocking work (SQLite, map syscalls) off the async workers, at most [`MAX_BLOCKING`]
/// at a time.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_BLOCKING);
    let _slot = SLOTS
        .acquire()
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// The bearer token a request carries, if any. The scheme is matched without regard to case
/// (RFC 7235: `bearer` is `Bearer`); another scheme counts as a wrong token, not as none.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?;
    Some(
        v.to_str()
            .ok()
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim()),
    )
}

/// Who is asking: the role of the request's token, or `None` for a request without one. A
/// token that is no role's is refused here, on reads too, so a mistyped token is told at once
/// rather than showing a read-only UI.
fn caller(st: &ApiState, headers: &HeaderMap) -> Result<Option<Role>, ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.into());
    let Some(given) = bearer(headers) else {
        return Ok(None);
    };
    match crate::agent::token::role_of(&st.state_dir, given)? {
        Some(role) => Ok(Some(role)),
        None => Err(unauthorized(
            "wrong bearer token (see `astra token show [--role viewer]`)",
        )),
    }
}

/// Checks that a request may do what its method says: changes need the admin's token; reads
/// need none, or any role's when the agent runs with `--api-read-token`.
fn authorize(st: &ApiState, headers: &HeaderMap, changes: bool) -> Result<Option<Role>, ApiError> {
    let role = caller(st, headers)?;
    match role {
        Some(Role::Admin) => {}
        Some(Role::Viewer) if changes => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "this is the viewer's token: it reads, and changes nothing (use the admin's)"
                    .into(),
            ));
        }
        Some(Role::Viewer) => {}
        None if changes => {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "missing bearer token (see `astra token show`)".into(),
            ));
        }
        None if st.read_token => {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "this agent needs a token for reads too (see `astra token show --role viewer`)"
                    .into(),
            ));
        }
        None => {}
    }
    Ok(role)
}

/// Paths anyone may read, whatever `--api-read-token` says: the UI's page and assets (no data
/// in them), health, the OpenAPI description, and who a token belongs to.
fn public_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/healthz" | "/readyz" | "/api/v1/openapi.json" | "/api/v1/whoami"
    ) || path.starts_with("/ui/")
}

/// Whether `host` (a Host header) names a loopback address: `localhost`, `127.x.y.z`, `::1`,
/// with or without a port.
fn loopback_host(host: &str) -> bool {
    if let Ok(a) = host.parse::<IpAddr>() {
        return a.is_loopback();
    }
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// Runs before any handler or body extractor:
/// - on an API bound to loopback, a request whose Host is not a loopback name is refused, so a
///   web page that rebinds its own DNS name to 127.0.0.1 cannot read the unauthenticated GETs;
/// - every request that is not a GET or HEAD must carry the token, checked before its body is
///   read (the 413 of an oversized body used to come before the 401).
async fn guard(
    State(st): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if st.loopback {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        if let Some(h) = host.filter(|h| !loopback_host(h)) {
            return ApiError(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host '{}' is not a loopback name, and this API listens on loopback only",
                    crate::text::excerpt(h)
                ),
            )
            .into_response();
        }
    }
    // A prediction is posted (its rows are a body) but changes nothing: a read.
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && !req.uri().path().starts_with("/api/v1/predict");
    if (changes || !public_path(req.uri().path()))
        && let Err(e) = authorize(&st, req.headers(), changes)
    {
        return e.into_response();
    }
    let path = changes.then(|| req.uri().path().to_owned());
    let r = next.run(req).await;
    // A change that went through: the UIs re-read the list they show.
    if let Some(p) = path
        && r.status().is_success()
    {
        st.live.lists_changed(&p);
    }
    r
}

/// axum's own refusals (a bad query or path, 405, 413, an unknown path) come as plain text;
/// the API promises `{"error": "..."}` for every error, so they are rewritten here.
async fn json_errors(r: Response) -> Response {
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(r.status().is_client_error() || r.status().is_server_error()) || is_json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let text = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
    } else {
        text
    };
    let body = serde_json::to_vec(&json!({ "error": text })).expect("JSON serialises");
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

pub fn router(st: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/api/v1/openapi.json",
            get(|| async { axum::Json(openapi()) }),
        )
        .route("/api/v1/status", get(status))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/top-talkers", get(top_talkers))
        .route("/api/v1/attack-summary", get(attack_summary))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/blocklist", get(list_block).post(add_block))
        .route(
            "/api/v1/blocklist/{*net}",
            axum::routing::delete(remove_block),
        )
        .route("/api/v1/allowlist", get(list_allow).post(add_allow))
        .route(
            "/api/v1/allowlist/{*net}",
            axum::routing::delete(remove_allow),
        )
        .route(
            "/api/v1/quarantine",
            get(list_quarantine).post(add_quarantine),
        )
        .route(
            "/api/v1/quarantine/{*net}",
            axum::routing::delete(remove_quarantine),
        )
        .route("/api/v1/throttle", get(list_throttle).post(add_throttle))
        .route(
            "/api/v1/throttle/{*net}",
            axum::routing::delete(remove_throttle),
        )
        .route("/api/v1/protect", get(list_protect).post(add_protect))
        .route(
            "/api/v1/protect/{*addr}",
            axum::routing::delete(remove_protect),
        )
        .route("/api/v1/model", get(model))
        .route("/api/v1/model/train", axum::routing::post(train))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/tags", get(tags))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/events", axum::routing::post(events))
        .route("/api/v1/predict", axum::routing::post(predict))
        .route("/api/v1/predict-batch", axum::routing::post(predict_batch))
        .route("/api/v1/features", get(features))
        .merge(crate::agent::ui::router())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

/// Ready when the agent's status says it is running and it polled recently.
async fn readyz(State(st): State<ApiState>) -> Response {
    let status = AgentStatus::read(&st.state_dir);
    let fresh = (st.poll_interval * 3).max(Duration::from_secs(5)).as_secs();
    let why = match &status {
        None => Some("no agent status yet".to_string()),
        Some(s) if !s.running => Some("agent is stopping".into()),
        Some(s)
            if s.interfaces
                .iter()
                .any(|i| i.mode == AttachedMode::Detached) =>
        {
            Some(format!(
                "programs detached from {}",
                s.interfaces
                    .iter()
                    .filter(|i| i.mode == AttachedMode::Detached)
                    .map(|i| i.iface.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        Some(s) => match s.last_poll_at {
            None => Some("no poll yet".into()),
            Some(t) if now_unix().saturating_sub(t) > fresh => {
                Some(format!("last poll {} s ago", now_unix().saturating_sub(t)))
            }
            Some(_) => None,
        },
    };
    match why {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(w) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {w}\n")).into_response(),
    }
}

async fn status(State(st): State<ApiState>) -> ApiResult {
    ok(blocking(move || {
        Ok(crate::agent::status::status_report(
            &st.pin_dir,
            &st.state_dir,
            st.store,
            None,
        )?)
    })
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowsQuery {
    top: Option<u64>,
    /// An address or prefix either end is in.
    addr: Option<String>,
    /// A port either end uses.
    port: Option<u16>,
}

async fn flows(State(st): State<ApiState>, Query(q): Query<FlowsQuery>) -> ApiResult {
    let top = match q.top {
        None => 100,
        // Zero flows is a fair question (and the schema allows it); more than a page is not.
        Some(0) => 0,
        Some(n) => page_limit(Some(n))? as usize,
    };
    let m = crate::agent::status::FlowMatch {
        net: q
            .addr
            .as_deref()
            .map(|a| parse_net(a).map_err(|e| ApiError::bad_request(format!("addr: {e}"))))
            .transpose()?,
        port: q.port,
    };
    ok(blocking(move || {
        Ok(crate::agent::status::flows_matching(
            &st.pin_dir,
            &st.state_dir,
            top,
            m,
        )?)
    })
    .await?)
}

async fn stats(State(st): State<ApiState>) -> ApiResult {
    ok(blocking(move || {
        Ok(crate::agent::status::stats_report(
            &st.pin_dir,
            &st.state_dir,
            &st.store,
        )?)
    })
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TalkersQuery {
    limit: Option<u64>,
}

/// Sources in `/api/v1/top-talkers` unless `limit` says otherwise.
const TALKERS_DEFAULT: u64 = 20;

async fn top_talkers(State(st): State<ApiState>, Query(q): Query<TalkersQuery>) -> ApiResult {
    let limit = page_limit(Some(q.limit.unwrap_or(TALKERS_DEFAULT)))? as usize;
    ok(blocking(move || Ok(crate::agent::status::top_talkers(&st.pin_dir, limit)?)).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryQuery {
    /// A duration such as 1h; default 24h.
    since: Option<String>,
}

async fn attack_summary(State(st): State<ApiState>, Query(q): Query<SummaryQuery>) -> ApiResult {
    let since = HistoryQuery {
        since: Some(q.since.unwrap_or_else(|| "24h".into())),
        limit: None,
    }
    .since_ms()?;
    ok(blocking(move || Ok(crate::sink::history::attack_summary(&st.store, since)?)).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// A duration such as 10m.
    since: Option<String>,
    limit: Option<usize>,
}

impl HistoryQuery {
    fn since_ms(&self) -> Result<u64, ApiError> {
        match &self.since {
            None => Ok(0),
            Some(s) => humantime::parse_duration(s)
                .map(|d| now_ms().saturating_sub(d.as_millis() as u64))
                .map_err(|e| ApiError::bad_request(format!("since={s}: {e}"))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    since: Option<String>,
    limit: Option<usize>,
    /// An attack type, e.g. port_scan.
    #[serde(rename = "type")]
    attack_type: Option<String>,
    /// This severity or higher: low, medium, high, critical.
    severity: Option<String>,
    /// The alert's source address.
    source: Option<String>,
}

async fn alerts(State(st): State<ApiState>, Query(q): Query<AlertsQuery>) -> ApiResult {
    use crate::detect::{AttackType, Severity};
    let since = HistoryQuery {
        since: q.since,
        limit: None,
    }
    .since_ms()?;
    let limit = page_limit(q.limit.map(|n| n as u64))? as usize;
    let filter = crate::sink::history::AlertFilter {
        attack_type: q
            .attack_type
            .map(|t| one_of("type", &t, AttackType::ALL, AttackType::as_str))
            .transpose()?,
        min_severity: q
            .severity
            .map(|s| one_of("severity", &s, Severity::ALL, Severity::as_str))
            .transpose()?,
        source: q
            .source
            .map(|s| {
                s.parse::<IpAddr>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "source={}: not an IP address",
                        crate::text::excerpt(&s)
                    ))
                })
            })
            .transpose()?,
    };
    ok(blocking(move || {
        Ok(crate::sink::history::alerts_where(
            &st.store, since, limit, &filter,
        )?)
    })
    .await?)
}

async fn incidents(State(st): State<ApiState>, Query(q): Query<HistoryQuery>) -> ApiResult {
    let since = q.since_ms()?;
    let limit = page_limit(q.limit.map(|n| n as u64))? as usize;
    ok(blocking(move || Ok(crate::sink::history::incidents(&st.store, since, limit)?)).await?)
}

async fn incident(State(st): State<ApiState>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let row = blocking(move || Ok(crate::sink::history::incident(&st.store, &id)?)).await?;
    match row {
        Some(r) => ok(r),
        None => Err(ApiError(StatusCode::NOT_FOUND, "no such incident".into())),
    }
}

/// Entries per page of a list, unless `limit` says otherwise; and the most one page holds.
pub const PAGE_DEFAULT: u64 = 1000;
pub const PAGE_MAX: u64 = 10_000;
/// The largest offset: the largest integer JSON readers hold exactly (2^53 - 1).
const MAX_OFFSET: u64 = (1 << 53) - 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    offset: Option<u64>,
    limit: Option<u64>,
    /// Only the entries with this tag (a feed's name, `crowdsec/<origin>`, ...).
    tag: Option<String>,
}

fn page_limit(limit: Option<u64>) -> Result<u64, ApiError> {
    match limit {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit={n}: between 1 and {PAGE_MAX}"
        ))),
    }
}

async fn list(st: ApiState, kind: ListKind, q: PageQuery) -> ApiResult {
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::bad_request(format!(
            "offset={offset}: at most {MAX_OFFSET}"
        )));
    }
    let limit = page_limit(q.limit)?;
    let tag = q.tag;
    let (entries, total) =
        blocking(move || Ok(st.lists()?.list_page(kind, offset, limit, tag.as_deref())?)).await?;
    let next = offset.saturating_add(entries.len() as u64);
    ok(json!({
        "entries": entries,
        "total": total,
        "offset": offset,
        "limit": limit,
        "next_offset": (next < total).then_some(next),
    }))
}

async fn list_block(State(st): State<ApiState>, Query(q): Query<PageQuery>) -> ApiResult {
    list(st, ListKind::Block, q).await
}

async fn list_allow(State(st): State<ApiState>, Query(q): Query<PageQuery>) -> ApiResult {
    list(st, ListKind::Allow, q).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsQuery {
    /// One list; absent = every list.
    list: Option<String>,
}

/// The value of `all` a query parameter names, or a 400 that lists them.
fn one_of<T: Copy, const N: usize>(
    param: &str,
    given: &str,
    all: [T; N],
    name: fn(T) -> &'static str,
) -> Result<T, ApiError> {
    all.into_iter().find(|v| name(*v) == given).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{param}={}: one of {}",
            crate::text::excerpt(given),
            all.map(name).join(", ")
        ))
    })
}

/// Entries per tag of one list or of all, for the UI's feed filter.
async fn tags(State(st): State<ApiState>, Query(q): Query<TagsQuery>) -> ApiResult {
    let kinds = match q.list {
        None => ListKind::ALL.to_vec(),
        Some(list) => vec![one_of("list", &list, ListKind::ALL, ListKind::as_str)?],
    };
    let counts = blocking(move || {
        let mut out = Vec::new();
        for kind in kinds {
            for (tag, entries) in st.store.tag_counts(kind)? {
                out.push(json!({ "list": kind.as_str(), "tag": tag, "entries": entries }));
            }
        }
        Ok(out)
    })
    .await?;
    ok(counts)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    net: String,
    /// A duration such as 10m; absent or "permanent" = no expiry.
    ttl: Option<String>,
    #[serde(default)]
    reason: String,
    /// Needed for 0.0.0.0/0 and ::/0.
    #[serde(default)]
    force: bool,
    /// A throttle's limits: "100pps", "10mbit", or both in an array.
    rate: Option<RateField>,
    /// A throttle's burst, e.g. "100ms".
    burst: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RateField {
    One(String),
    Many(Vec<String>),
}

/// The throttle rate of a request; `None` for the other kinds, which must not carry one.
fn request_rate(req: &AddRequest, kind: ListKind) -> Result<Option<Rate>, ApiError> {
    let bad = |e: crate::addr::AddrError| ApiError::bad_request(e.to_string());
    if kind != ListKind::Throttle {
        if req.rate.is_some() || req.burst.is_some() {
            return Err(ApiError::bad_request(format!(
                "rate and burst are for throttle entries, not {kind} entries"
            )));
        }
        return Ok(None);
    }
    let texts = match &req.rate {
        None => Vec::new(),
        Some(RateField::One(s)) => vec![s.as_str()],
        Some(RateField::Many(v)) => v.iter().map(String::as_str).collect(),
    };
    if texts.len() > 2 {
        return Err(ApiError::bad_request(
            "rate: at most two limits, one in pps and one in bits",
        ));
    }
    let limits = texts
        .into_iter()
        .map(crate::addr::parse_rate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let burst = req
        .burst
        .as_deref()
        .map(crate::addr::parse_burst)
        .transpose()
        .map_err(bad)?;
    Ok(Some(Rate::from_limits(&limits, burst).map_err(bad)?))
}

/// A request's `ttl`: absent, "permanent" or zero = no expiry.
fn request_ttl(ttl: Option<&str>) -> Result<Option<Duration>, ApiError> {
    Ok(ttl
        .map(parse_ttl)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .filter(|d| !d.is_zero()))
}

/// Authorised by [`guard`] before the body was read.
async fn add(st: ApiState, body: Bytes, kind: ListKind) -> ApiResult {
    let req: AddRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let net = parse_net(&req.net).map_err(|e| ApiError::bad_request(e.to_string()))?;
    crate::addr::check_not_everything(&net, kind.everything_warning(), req.force)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    crate::limits::check_reason(&req.reason)?;
    let rate = request_rate(&req, kind)?;
    if kind == ListKind::Allow && req.ttl.is_some() {
        return Err(ApiError::bad_request(
            "allowlist entries do not expire: drop ttl",
        ));
    }
    let ttl = request_ttl(req.ttl.as_deref())?;
    let added = blocking(move || {
        let mut lists = st.lists()?;
        Ok(lists.add_manual_rated(kind, net, ttl, &req.reason, rate)?)
    })
    .await?;
    info!(net = %net, list = %kind, "added through the API");
    Ok((StatusCode::CREATED, axum::Json(added)).into_response())
}

async fn add_block(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    add(st, body, ListKind::Block).await
}

async fn add_allow(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    add(st, body, ListKind::Allow).await
}

/// Authorised by [`guard`].
async fn remove(st: ApiState, net: String, kind: ListKind) -> ApiResult {
    let net = parse_net(&net).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let removed = blocking(move || {
        let mut lists = st.lists()?;
        Ok(lists.remove(kind, &net)?)
    })
    .await?;
    if !removed {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{net} is not on the {kind} list"),
        ));
    }
    info!(net = %net, list = %kind, "removed through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_block(State(st): State<ApiState>, UrlPath(net): UrlPath<String>) -> ApiResult {
    remove(st, net, ListKind::Block).await
}

async fn remove_allow(State(st): State<ApiState>, UrlPath(net): UrlPath<String>) -> ApiResult {
    remove(st, net, ListKind::Allow).await
}

async fn list_quarantine(State(st): State<ApiState>, Query(q): Query<PageQuery>) -> ApiResult {
    list(st, ListKind::Quarantine, q).await
}

async fn add_quarantine(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    add(st, body, ListKind::Quarantine).await
}

async fn remove_quarantine(State(st): State<ApiState>, UrlPath(net): UrlPath<String>) -> ApiResult {
    remove(st, net, ListKind::Quarantine).await
}

async fn list_throttle(State(st): State<ApiState>, Query(q): Query<PageQuery>) -> ApiResult {
    list(st, ListKind::Throttle, q).await
}

async fn add_throttle(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    add(st, body, ListKind::Throttle).await
}

async fn remove_throttle(State(st): State<ApiState>, UrlPath(net): UrlPath<String>) -> ApiResult {
    remove(st, net, ListKind::Throttle).await
}

async fn list_protect(State(st): State<ApiState>, Query(q): Query<PageQuery>) -> ApiResult {
    list(st, ListKind::Protect, q).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectRequest {
    /// `ADDR`, `ADDR:PORT,PORT`, `[V6]:PORT`: as `astra protect` takes it.
    target: String,
    /// New SYNs a second from sources not known to complete handshakes.
    syn_budget: Option<u64>,
    /// How far a burst may go above the budget, as time at the budget (default 100ms).
    burst: Option<String>,
    /// One half alone: "syn" or "reflect" (default both).
    only: Option<Half>,
    /// Answer strangers' new SYNs with SYN cookies from XDP (see `astra protect --syn-cookies`).
    #[serde(default)]
    syn_cookies: bool,
    ttl: Option<String>,
    #[serde(default)]
    reason: String,
}

/// Authorised by [`guard`] before the body was read.
async fn add_protect(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let bad = |e: crate::addr::AddrError| ApiError::bad_request(e.to_string());
    let req: ProtectRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let (target, ports) = crate::addr::parse_target(&req.target).map_err(bad)?;
    let burst = match &req.burst {
        None => Duration::from_millis(100),
        Some(b) => crate::addr::parse_burst(b).map_err(bad)?,
    };
    let ttl = request_ttl(req.ttl.as_deref())?;
    let budget = req.syn_budget.unwrap_or(Protection::DEFAULT_SYN_BUDGET);
    let p = Protection::new(ports, req.only).with_cookies(req.syn_cookies);
    let added = blocking(move || {
        Ok(st
            .lists()?
            .protect_manual(target, p, budget, burst, ttl, &req.reason)?)
    })
    .await?;
    info!(target = %target, "protected through the API");
    Ok((StatusCode::CREATED, axum::Json(added)).into_response())
}

async fn remove_protect(State(st): State<ApiState>, UrlPath(addr): UrlPath<String>) -> ApiResult {
    let addr = crate::addr::parse_host(&addr).map_err(|e| ApiError::bad_request(e.to_string()))?;
    remove(
        st,
        crate::addr::host_net(addr).to_string(),
        ListKind::Protect,
    )
    .await
}

/// One login event as a service reports it (astra-bruteforce-detector's `/ingest` fields).
#[derive(Debug, PartialEq)]
pub struct LoginEvent {
    /// UNIX time in milliseconds.
    pub ts_ms: u64,
    pub src_ip: IpAddr,
    pub dst_port: u16,
    pub failed: bool,
}

/// Why a `POST /api/v1/events` body was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("request body: {0}")]
    Body(#[from] serde_json::Error),
    #[error("{0} events in one request; at most {EVENTS_PER_REQUEST}")]
    TooMany(usize),
    #[error(transparent)]
    Event(#[from] EventError),
}

/// The events of a request body (one event or an array), all checked: one bad event and none
/// is taken. `now_ms` is the time events without `ts` get, and the limit of the future.
pub fn parse_login_events(body: &[u8], now_ms: u64) -> Result<Vec<LoginEvent>, EventsError> {
    let v: Value = serde_json::from_slice(body)?;
    let items = match v {
        Value::Array(items) => items,
        one => vec![one],
    };
    if items.len() > EVENTS_PER_REQUEST {
        return Err(EventsError::TooMany(items.len()));
    }
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, v)| login_event(i, v, now_ms))
        .collect::<Result<Vec<_>, _>>()?)
}

/// What is wrong with one event of a request, naming the event and the field.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("events[{0}]: expected an object")]
    NotObject(usize),
    #[error("events[{index}].{field}: {why}")]
    Field {
        index: usize,
        field: String,
        why: String,
    },
}

/// Checks event `i` of a request.
fn login_event(i: usize, v: &Value, now_ms: u64) -> Result<LoginEvent, EventError> {
    let at = |field: &str, why: &str| EventError::Field {
        index: i,
        field: field.to_owned(),
        why: why.to_owned(),
    };
    let o = v.as_object().ok_or(EventError::NotObject(i))?;
    const KNOWN: [&str; 7] = [
        "ts",
        "src_ip",
        "dst_ip",
        "dst_port",
        "protocol",
        "bytes",
        "event_type",
    ];
    if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(at(k, "unknown field"));
    }
    let text = |field: &str| -> Result<Option<&str>, EventError> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(at(field, "expected a string")),
        }
    };
    let src_ip: IpAddr = text("src_ip")?
        .ok_or_else(|| at("src_ip", "missing"))?
        .parse()
        .map_err(|_| at("src_ip", "not an IP address"))?;
    if let Some(d) = text("dst_ip")? {
        d.parse::<IpAddr>()
            .map_err(|_| at("dst_ip", "not an IP address"))?;
    }
    text("protocol")?;
    let dst_port = o
        .get("dst_port")
        .ok_or_else(|| at("dst_port", "missing"))?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| at("dst_port", "expected a port number, 1 to 65535"))?;
    if o.get("bytes")
        .is_some_and(|b| !b.is_null() && b.as_u64().is_none())
    {
        return Err(at("bytes", "expected a count of bytes"));
    }
    let failed = match text("event_type")?.ok_or_else(|| at("event_type", "missing"))? {
        "login_failed" => true,
        "login_success" => false,
        other => {
            return Err(at(
                "event_type",
                &format!(
                    "'{}' is not login_failed or login_success",
                    crate::text::excerpt(other)
                ),
            ));
        }
    };
    let ts_ms = match o.get("ts") {
        None | Some(Value::Null) => now_ms,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0) as u64)
            .ok_or_else(|| at("ts", "expected UNIX seconds or an RFC 3339 time"))?,
        Some(Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .ok_or_else(|| at("ts", "expected UNIX seconds or an RFC 3339 time"))?,
        Some(_) => return Err(at("ts", "expected UNIX seconds or an RFC 3339 time")),
    };
    if ts_ms > now_ms + 60_000 {
        return Err(at("ts", "is in the future"));
    }
    Ok(LoginEvent {
        ts_ms,
        src_ip,
        dst_port,
        failed,
    })
}

/// `POST /api/v1/events`: one login event or an array of them. The whole request is checked
/// first: one bad event and nothing is taken. Failed logins count toward the brute-force rule
/// over the login window, as evidence a service saw (so their source is taken as real).
/// Authorised by [`guard`] before the body was read.
async fn events(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let (now, mono) = (now_ms(), crate::clock::mono_now_ns());
    let events =
        parse_login_events(&body, now).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let failed: Vec<(IpAddr, u16, u64)> = events
        .iter()
        .filter(|e| e.failed)
        .map(|e| {
            let ago_ns = now.saturating_sub(e.ts_ms).saturating_mul(1_000_000);
            (e.src_ip, e.dst_port, mono.saturating_sub(ago_ns))
        })
        .collect();
    let n_failed = failed.len();
    if !st.logins.push_all(failed) {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many events waiting for the next detection pass; retry shortly".into(),
        ));
    }
    info!(
        events = events.len(),
        login_failed = n_failed,
        "login events reported"
    );
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "accepted": events.len(), "login_failed": n_failed })),
    )
        .into_response())
}

/// Rows one `/api/v1/predict-batch` request may carry.
pub const PREDICT_ROWS: usize = 10_000;

/// One feature row of a prediction request: every feature, by name, a finite number >= 0.
fn feature_row(v: &Value, at: &str) -> Result<[f64; FEATURE_NAMES.len()], ApiError> {
    let bad = |field: &str, why: &str| ApiError::bad_request(format!("{at}{field}: {why}"));
    let o = v.as_object().ok_or_else(|| {
        ApiError::bad_request(format!(
            "{}: expected an object of feature name to value",
            at.trim_end_matches('.')
        ))
    })?;
    if let Some(k) = o.keys().find(|k| !FEATURE_NAMES.contains(&k.as_str())) {
        return Err(bad(
            &crate::text::excerpt(k),
            "no such feature (GET /api/v1/features lists them)",
        ));
    }
    let mut row = [0.0; FEATURE_NAMES.len()];
    for (x, name) in row.iter_mut().zip(FEATURE_NAMES) {
        *x = match o.get(name) {
            None => return Err(bad(name, "missing: every feature is needed")),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| bad(name, "expected a finite number >= 0"))?,
        };
    }
    Ok(row)
}

/// The models' verdicts on rows, with the agent's anomaly threshold.
async fn predictions(
    st: ApiState,
    rows: Vec<[f64; FEATURE_NAMES.len()]>,
) -> Result<Vec<crate::detect::predict::Prediction>, ApiError> {
    blocking(move || {
        let threshold = AgentStatus::read(&st.state_dir)
            .and_then(|s| s.model)
            .map_or(
                crate::detect::model::ModelConfig::default().anomaly_threshold,
                |m| m.threshold,
            );
        let cell = st
            .predictor
            .get_or_init(|| Mutex::new(crate::detect::predict::Predictor::new(&st.state_dir)));
        let mut p = cell.lock().expect("predictor lock");
        p.refresh();
        Ok(rows.iter().map(|r| p.predict(r, threshold)).collect())
    })
    .await
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// The classifier seed's `/predict`: one row, scored with the loaded models.
async fn predict(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let row = feature_row(&json_body(&body)?, "")?;
    let mut p = predictions(st, vec![row]).await?;
    ok(p.remove(0))
}

/// `/predict-batch`: an array of rows; one bad row and none is scored, with a 400 naming it.
async fn predict_batch(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let v = json_body(&body)?;
    let items = v
        .as_array()
        .ok_or_else(|| ApiError::bad_request("body: expected an array of rows"))?;
    if items.len() > PREDICT_ROWS {
        return Err(ApiError::bad_request(format!(
            "{} rows: at most {PREDICT_ROWS} a request",
            items.len()
        )));
    }
    let rows = items
        .iter()
        .enumerate()
        .map(|(i, v)| feature_row(v, &format!("rows[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    ok(predictions(st, rows).await?)
}

/// The feature order, units and ranges the predictions and the models take.
async fn features() -> ApiResult {
    ok(crate::features::FEATURE_INFO
        .iter()
        .map(|(name, unit, meaning)| {
            let max = (*unit == "0..1").then_some(1.0);
            json!({ "name": name, "unit": unit, "description": meaning, "min": 0.0, "max": max })
        })
        .collect::<Vec<_>>())
}

async fn model(State(st): State<ApiState>) -> ApiResult {
    let status = blocking(move || Ok(AgentStatus::read(&st.state_dir))).await?;
    ok(json!({ "model": status.and_then(|s| s.model) }))
}

/// Asks the poll thread to train the model on the rows it has collected, at its next pass.
async fn train(State(st): State<ApiState>) -> ApiResult {
    let model = blocking({
        let dir = st.state_dir.clone();
        move || Ok(AgentStatus::read(&dir).and_then(|s| s.model))
    })
    .await?;
    let conflict = |m: String| Err(ApiError(StatusCode::CONFLICT, m));
    match model {
        None => return conflict("the agent has not reported its model yet".into()),
        Some(m) if m.state == "disabled" => {
            return conflict("the model is disabled (detect.model.enabled = false)".into());
        }
        Some(m) if m.rows_collected < crate::detect::model::MIN_TRAINING_ROWS => {
            return conflict(format!(
                "{} training rows collected, at least {} needed",
                m.rows_collected,
                crate::detect::model::MIN_TRAINING_ROWS
            ));
        }
        Some(_) => {}
    }
    st.train.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "queued": true, "at_next_poll": true })),
    )
        .into_response())
}

/// Who the request's token belongs to (`anonymous` without one), and what reads need.
async fn whoami(State(st): State<ApiState>, headers: HeaderMap) -> ApiResult {
    let role = caller(&st, &headers)?;
    ok(json!({
        "role": role.map_or("anonymous", Role::as_str),
        "can_change": role == Some(Role::Admin),
        "reads_need_token": st.read_token,
    }))
}

/// The UI's event stream: `hello` with the last 15 minutes of samples, then `sample` each
/// poll, `alert`, `lists` and `summary` as they happen, and `resync` when this client fell
/// too far behind (it should reload what it shows). Browsers reconnect by themselves.
async fn stream(State(st): State<ApiState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let rx = st.live.subscribe();
    let hello = json!({
        "poll_interval_ms": st.poll_interval.as_millis() as u64,
        "window_ms": crate::agent::live::WINDOW_MS,
    });
    let first = format!("{{\"config\":{hello},\"samples\":{}}}", st.live.history());
    let events = futures_util::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some(data) = first {
            let e = Event::default().event("hello").data(data);
            return Some((Ok::<_, std::convert::Infallible>(e), (None, rx)));
        }
        let e = match rx.recv().await {
            Ok(f) => Event::default().event(f.event).data(&*f.data),
            Err(RecvError::Lagged(n)) => Event::default().event("resync").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(e), (None, rx)))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// What `since` accepts (humantime's units, each number at most six digits), as a pattern.
const DURATION_PATTERN: &str = "^0$|^( *[0-9]{1,6} *(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y))+ *$";

/// The OpenAPI 3.1 description served at /api/v1/openapi.json.
pub fn openapi() -> Value {
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let json_ok = |what: &str| json!({"description": what, "content": {"application/json": {}}});
    let history_params = json!([
        {"name": "since", "in": "query", "schema": {"type": "string", "pattern": DURATION_PATTERN}, "description": "only the last DUR, e.g. 90s, 10m, 2h 30m, 7d"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}, "description": "at most the newest N (default 1000)"}
    ]);
    let list_ops = |which: &str, ttl: bool, rate: bool| {
        let mut props = json!({
            "net": {"type": "string", "maxLength": 64, "description": "address or prefix, e.g. 198.18.0.7 or 198.18.0.0/24"},
            "reason": {"type": "string", "maxLength": crate::limits::REASON_CHARS},
            "force": {"type": "boolean", "description": "needed for 0.0.0.0/0 and ::/0"}
        });
        if ttl {
            props["ttl"] = json!({"type": "string", "description": "e.g. 10m, 2h; absent or 'permanent' = no expiry"});
        }
        if rate {
            let one = json!({"type": "string", "pattern": "^[0-9]+ *([kKmM]?pps|[kKmMgG]?bit)$"});
            props["rate"] = json!({"description": "packets and/or bits per second, e.g. \"100pps\", \"10mbit\" or [\"100pps\", \"10mbit\"]",
                "oneOf": [one.clone(), {"type": "array", "minItems": 1, "maxItems": 2, "items": one}]});
            props["burst"] = json!({"type": "string", "description": "burst above the rate as time at the rate, 20ms to 10s (default 100ms)"});
        }
        json!({
            "get": {"summary": format!("One page of the {which}, oldest first"),
                "parameters": [
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "description": "entries to skip (default 0)"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}, "description": "entries per page (default 1000)"}
                ],
                "responses": {"200": json_ok("{entries, total, offset, limit, next_offset}"), "400": err.clone()}},
            "post": {
                "summary": format!("Add to the {which} (in force in the kernel when this returns)"),
                "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": if rate { json!(["net", "rate"]) } else { json!(["net"]) },
                    "additionalProperties": false, "properties": props}}}},
                "responses": {"201": json_ok("added"), "400": err.clone(), "401": err.clone()}
            }
        })
    };
    let delete = |which: &str| {
        json!({"delete": {
            "summary": format!("Remove from the {which}"),
            "security": [{"bearer": []}],
            "parameters": [{"name": "net", "in": "path", "required": true, "schema": {"type": "string"},
                "description": "address or prefix; the '/' of a prefix may be sent as is or as %2F"}],
            "responses": {"204": {"description": "removed"}, "400": err.clone(), "401": err.clone(), "404": err.clone()}
        }})
    };
    // Added apart: one json! of every path is past serde_json's macro recursion limit.
    let protect_ops = json!({
        "get": list_ops("protect list", true, false)["get"].clone(),
        "post": {
            "summary": "Protect a target, this host's or a server behind it (in force in the kernel when this returns)",
            "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["target"], "additionalProperties": false, "properties": {
                    "target": {"type": "string", "maxLength": 128, "description": "an address with the ports whose new SYNs meet the budget (every port when none): 198.18.0.2:80,443 or [2001:db8::1]:443"},
                    "syn_budget": {"type": "integer", "minimum": 1, "maximum": Protection::MAX_SYN_BUDGET, "description": "new SYNs a second from sources not seen completing a handshake (default 1000)"},
                    "burst": {"type": "string", "description": "burst above the budget as time at the budget, 20ms to 10s (default 100ms)"},
                    "only": {"type": "string", "enum": ["syn", "reflect"], "description": "one half alone: the SYN budget, or dropping answers to requests the target never sent (default both)"},
                    "syn_cookies": {"type": "boolean", "description": "answer strangers' new SYNs with SYN cookies from XDP instead of the budget (IPv4 without options, IPv6 without extension headers; needs nftables with SYNPROXY)"},
                    "ttl": {"type": "string", "description": "e.g. 10m, 2h; absent or 'permanent' = no expiry"},
                    "reason": {"type": "string", "maxLength": crate::limits::REASON_CHARS}
                }}}}},
            "responses": {"201": json_ok("added"), "400": err.clone(), "401": err.clone()}
        }
    });
    let protect_delete = json!({"delete": {
        "summary": "Remove a protection",
        "security": [{"bearer": []}],
        "parameters": [{"name": "addr", "in": "path", "required": true, "schema": {"type": "string"}, "description": "the protected address"}],
        "responses": {"204": {"description": "removed"}, "400": err.clone(), "401": err.clone(), "404": err.clone()}
    }});
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "Astra agent API", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "the admin's token in <state-dir>/api.token (`astra token show`) for changes; the viewer's (`astra token show --role viewer`) reads only"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
                "LoginEvent": {"type": "object", "required": ["src_ip", "dst_port", "event_type"], "additionalProperties": false, "properties": {
                    "ts": {"description": "UNIX seconds or RFC 3339; default now", "oneOf": [{"type": "number", "minimum": 0}, {"type": "string"}]},
                    "src_ip": {"type": "string"},
                    "dst_ip": {"type": "string"},
                    "dst_port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "protocol": {"type": "string"},
                    "bytes": {"type": "integer", "minimum": 0},
                    "event_type": {"type": "string", "enum": ["login_failed", "login_success"]}
                }}
            }
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness: the agent process serves requests", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness: programs attached and polled recently",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready, with the reason"}}}},
            "/api/v1/openapi.json": {"get": {"summary": "This description", "responses": {"200": json_ok("OpenAPI document")}}},
            "/api/v1/status": {"get": {"summary": "Agent, interfaces, map fill levels, store and history (as `astra status --json`)",
                "responses": {"200": json_ok("status"), "500": err.clone()}}},
            "/api/v1/flows": {"get": {"summary": "Largest flows in the kernel table, both directions paired",
                "parameters": [{"name": "top", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": PAGE_MAX}, "description": "default 100"}],
                "responses": {"200": json_ok("flows"), "400": err.clone()}}},
            "/api/v1/alerts": {"get": {"summary": "Alerts from the history, oldest first", "parameters": history_params.clone(),
                "responses": {"200": json_ok("alerts"), "400": err.clone()}}},
            "/api/v1/incidents": {"get": {"summary": "Incidents from the history, oldest first", "parameters": history_params,
                "responses": {"200": json_ok("incidents"), "400": err.clone()}}},
            "/api/v1/incidents/{id}": {"get": {"summary": "One incident's full report",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": json_ok("incident"), "404": err.clone()}}},
            "/api/v1/blocklist": list_ops("blocklist", true, false),
            "/api/v1/blocklist/{net}": delete("blocklist"),
            "/api/v1/allowlist": list_ops("allowlist", false, false),
            "/api/v1/allowlist/{net}": delete("allowlist"),
            "/api/v1/quarantine": list_ops("quarantine list (single addresses: dropped both ways, except to and from allowlisted addresses)", true, false),
            "/api/v1/quarantine/{net}": delete("quarantine list"),
            "/api/v1/throttle": list_ops("throttle list (rate limits per source address or prefix)", true, true),
            "/api/v1/throttle/{net}": delete("throttle list"),
            "/api/v1/model": {"get": {"summary": "Isolation-forest model status", "responses": {"200": json_ok("model")}}},
            "/api/v1/events": {"post": {
                "summary": "Report login events (one, or an array of at most 10000); failed logins count toward the brute-force rule",
                "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "oneOf": [{"$ref": "#/components/schemas/LoginEvent"}, {"type": "array", "maxItems": EVENTS_PER_REQUEST, "items": {"$ref": "#/components/schemas/LoginEvent"}}]}}}},
                "responses": {"202": json_ok("{accepted, login_failed}"), "400": err.clone(), "401": err.clone(), "503": err.clone()}
            }}
        }
    });
    doc["paths"]["/api/v1/protect"] = protect_ops;
    doc["paths"]["/api/v1/protect/{addr}"] = protect_delete;
    doc["paths"]["/api/v1/whoami"] = json!({"get": {
        "summary": "The role of the request's bearer token (admin, viewer, or anonymous without one); a wrong token is a 401",
        "responses": {"200": json_ok("{role, can_change, reads_need_token}"), "401": err.clone()}}});
    doc["paths"]["/api/v1/stream"] = json!({"get": {
        "summary": "Server-sent events for the UI: hello (the last 15 minutes of samples), then sample each poll, alert, lists, summary, and resync for a client that fell behind",
        "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {}}}, "401": err.clone()}}});
    doc["paths"]["/api/v1/tags"] = json!({"get": {
        "summary": "Entries per tag (feed or origin) of one list, or of every list without `list`",
        "parameters": [{"name": "list", "in": "query", "schema": {"type": "string", "enum": ListKind::ALL.map(ListKind::as_str)}}],
        "responses": {"200": json_ok("[{list, tag, entries}]"), "400": err.clone()}}});
    let row_schema = json!({"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
        "description": "every feature of GET /api/v1/features, by name"});
    let prediction = "{attack_type, risk_score (1-10), confidence, anomaly_score, is_anomaly}";
    doc["paths"]["/api/v1/predict"] = json!({"post": {
        "summary": "Score one feature row with the loaded models: the classifier's class and probability, the forest's anomaly score",
        // A read: any role's token, or none unless reads need one.
        "security": [{}, {"bearer": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": row_schema}}},
        "responses": {"200": json_ok(prediction), "400": err.clone(), "401": err.clone()}}});
    doc["paths"]["/api/v1/predict-batch"] = json!({"post": {
        "summary": "Score up to 10000 rows; one bad row and none is scored (400 naming it)",
        // A read: any role's token, or none unless reads need one.
        "security": [{}, {"bearer": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "array", "maxItems": PREDICT_ROWS, "items": row_schema}}}},
        "responses": {"200": json_ok("[one prediction per row]"), "400": err.clone(), "401": err.clone()}}});
    doc["paths"]["/api/v1/features"] = json!({"get": {
        "summary": "The features in the models' order, with their units and ranges",
        "responses": {"200": json_ok("[{name, unit, description, min, max}]")}}});
    doc["paths"]["/api/v1/model/train"] = json!({"post": {
        "summary": "Train the isolation forest at the next poll on the rows collected so far",
        "security": [{"bearer": []}],
        "responses": {"202": json_ok("queued"), "401": err.clone(), "403": err.clone(), "409": err.clone()}}});
    let mut alert_params = doc["paths"]["/api/v1/alerts"]["get"]["parameters"].clone();
    if let Some(a) = alert_params.as_array_mut() {
        a.push(json!({"name": "type", "in": "query", "schema": {"type": "string", "enum": crate::detect::AttackType::ALL.map(crate::detect::AttackType::as_str)}}));
        a.push(json!({"name": "severity", "in": "query", "schema": {"type": "string", "enum": ["low", "medium", "high", "critical"]}, "description": "this severity or higher"}));
        a.push(json!({"name": "source", "in": "query", "schema": {"type": "string"}, "description": "the alert's source address"}));
    }
    doc["paths"]["/api/v1/alerts"]["get"]["parameters"] = alert_params;
    for list in [
        "blocklist",
        "allowlist",
        "quarantine",
        "throttle",
        "protect",
    ] {
        let path = format!("/api/v1/{list}");
        if let Some(a) = doc["paths"][&path]["get"]["parameters"].as_array_mut() {
            a.push(json!({"name": "tag", "in": "query", "schema": {"type": "string"}, "description": "only entries with this tag"}));
        }
    }
    if let Some(a) = doc["paths"]["/api/v1/flows"]["get"]["parameters"].as_array_mut() {
        a.push(json!({"name": "addr", "in": "query", "schema": {"type": "string"}, "description": "an address or prefix either end is in"}));
        a.push(json!({"name": "port", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 65535}, "description": "a port either end uses"}));
    }
    doc["paths"]["/api/v1/stats"] = json!({"get": {
        "summary": "Totals and rates of what the interfaces saw (packets, bits and drops a second over the last poll), flows, alerts, automatic blocks and list sizes",
        "responses": {"200": json_ok("stats"), "500": err.clone()}}});
    doc["paths"]["/api/v1/top-talkers"] = json!({"get": {
        "summary": "Sources of the live conversations, by bytes both ways, largest first",
        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}, "description": "default 20"}],
        "responses": {"200": json_ok("talkers"), "400": err.clone()}}});
    doc["paths"]["/api/v1/attack-summary"] = json!({"get": {
        "summary": "Alerts by attack type over a period, and how many of each were blocked",
        "parameters": [{"name": "since", "in": "query", "schema": {"type": "string"}, "description": "a duration such as 1h; default 24h"}],
        "responses": {"200": json_ok("summary"), "400": err.clone()}}});
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dir: &std::path::Path, read_token: bool) -> ApiState {
        ApiState {
            pin_dir: dir.join("pins"),
            state_dir: dir.to_owned(),
            store: Store::open_in_memory(),
            loopback: true,
            poll_interval: Duration::from_secs(1),
            read_token,
            live: Default::default(),
            train: Default::default(),
            logins: Default::default(),
            predictor: Default::default(),
        }
    }

    /// Sends one request through the whole router; returns the status and the body (the
    /// first chunk of it for a stream).
    async fn send(
        st: &ApiState,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let body = if method == "POST" {
            r#"{"net": "198.18.0.9"}"#
        } else {
            ""
        };
        send_body(st, method, path, token, body).await
    }

    /// [`send`] with a body of the caller's.
    async fn send_body(
        st: &ApiState,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        use tower::ServiceExt as _;
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let r = router(st.clone())
            .oneshot(req.body(axum::body::Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let mut body = r.into_body().into_data_stream();
        let first = futures_util::StreamExt::next(&mut body).await;
        let text = first
            .and_then(|c| c.ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        (status, text)
    }

    #[tokio::test]
    async fn roles_read_and_change_what_they_may() {
        use crate::agent::token::{Role, ensure};
        let dir = std::env::temp_dir().join(format!("astra-api-roles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let admin = ensure(&dir, Role::Admin).unwrap();
        let viewer = ensure(&dir, Role::Viewer).unwrap();
        let st = state(&dir, false);
        let who = |r: (StatusCode, String)| {
            assert_eq!(r.0, StatusCode::OK, "{}", r.1);
            serde_json::from_str::<Value>(&r.1).unwrap()["role"].clone()
        };
        assert_eq!(
            who(send(&st, "GET", "/api/v1/whoami", None).await),
            "anonymous"
        );
        assert_eq!(
            who(send(&st, "GET", "/api/v1/whoami", Some(&viewer)).await),
            "viewer"
        );
        assert_eq!(
            who(send(&st, "GET", "/api/v1/whoami", Some(&admin)).await),
            "admin"
        );
        // A wrong token is told, on reads too.
        let (code, body) = send(&st, "GET", "/api/v1/alerts", Some("nope")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("wrong bearer token"), "{body}");
        assert_eq!(
            send(&st, "GET", "/api/v1/alerts", None).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(&st, "GET", "/api/v1/alerts", Some(&viewer)).await.0,
            StatusCode::OK
        );
        // The viewer changes nothing; without a token neither does anyone.
        let (code, body) = send(&st, "POST", "/api/v1/blocklist", Some(&viewer)).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(body.contains("viewer"), "{body}");
        let (code, _) = send(&st, "POST", "/api/v1/model/train", Some(&viewer)).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert_eq!(
            send(&st, "POST", "/api/v1/blocklist", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert!(
            st.store
                .list_page(ListKind::Block, 0, 10, None)
                .unwrap()
                .0
                .is_empty()
        );
        // The admin's training request is refused while no agent reported a model.
        let (code, _) = send(&st, "POST", "/api/v1/model/train", Some(&admin)).await;
        assert_eq!(code, StatusCode::CONFLICT);
        assert!(!st.train.load(std::sync::atomic::Ordering::SeqCst));
        // With --api-read-token, reads need a token; whoami and the description do not.
        let private = state(&dir, true);
        let (code, body) = send(&private, "GET", "/api/v1/alerts", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("needs a token for reads"), "{body}");
        assert_eq!(
            send(&private, "GET", "/api/v1/alerts", Some(&viewer))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            send(&private, "GET", "/api/v1/whoami", None).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(&private, "GET", "/api/v1/openapi.json", None).await.0,
            StatusCode::OK
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_stream_starts_with_the_window_of_samples() {
        let dir = std::env::temp_dir().join(format!("astra-api-stream-{}", std::process::id()));
        let st = state(&dir, false);
        let c = crate::sink::metrics::test_counters(10, 0);
        st.live.observe(1_000, 1, &[("eth0", &c)], 2, 1.0, &[]);
        let (code, first) = send(&st, "GET", "/api/v1/stream", None).await;
        assert_eq!(code, StatusCode::OK);
        let data = first
            .strip_prefix("event: hello\ndata: ")
            .unwrap_or_else(|| panic!("{first}"))
            .trim_end();
        let hello: Value = serde_json::from_str(data).unwrap();
        assert_eq!(hello["config"]["poll_interval_ms"], 1000);
        assert_eq!(hello["samples"][0]["flows_active"], 2);
    }

    /// Predictions score rows with the imported classifier without a token (they change
    /// nothing); a bad row is a 400 naming its field, and one bad row fails the batch.
    #[tokio::test]
    async fn predictions_name_the_class_and_refuse_bad_rows() {
        let dir = std::env::temp_dir().join(format!("astra-api-predict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let model = crate::detect::ensemble::stump_classifier(
            &["distinct_dst_ports"],
            ["benign", "port_scan"],
            10.0,
            [0.9, 0.1],
            [0.0, 1.0],
        );
        std::fs::write(dir.join("classifier.json"), model.to_json()).unwrap();
        let st = state(&dir, false);
        let row = |ports: f64| {
            let mut o: serde_json::Map<String, Value> = FEATURE_NAMES
                .iter()
                .map(|n| (n.to_string(), 0.0.into()))
                .collect();
            o.insert("distinct_dst_ports".into(), ports.into());
            Value::Object(o)
        };
        let (code, body) = send_body(
            &st,
            "POST",
            "/api/v1/predict",
            None,
            &row(500.0).to_string(),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(p["attack_type"], "port_scan", "{p}");
        assert_eq!(p["confidence"], 1.0);
        assert_eq!(p["anomaly_score"], Value::Null, "no forest here");
        let batch = json!([row(1.0), row(50.0)]).to_string();
        let (code, body) = send_body(&st, "POST", "/api/v1/predict-batch", None, &batch).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let ps: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ps[0]["attack_type"], "benign");
        assert_eq!(ps[0]["risk_score"], 1);
        assert_eq!(ps[1]["attack_type"], "port_scan");

        let mut missing = row(1.0);
        missing.as_object_mut().unwrap().remove("pps");
        let mut negative = row(1.0);
        negative["bps"] = (-1.0).into();
        let mut unknown = row(1.0);
        unknown["nope"] = 1.0.into();
        for (body, says) in [
            (missing.to_string(), "pps: missing"),
            (negative.to_string(), "bps: expected a finite number >= 0"),
            (unknown.to_string(), "nope: no such feature"),
            ("[]".into(), "expected an object"),
            ("{".into(), "body:"),
        ] {
            let (code, resp) = send_body(&st, "POST", "/api/v1/predict", None, &body).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {resp}");
            assert!(resp.contains(says), "{body}: {resp}");
        }
        let batch = json!([row(1.0), missing]).to_string();
        let (code, resp) = send_body(&st, "POST", "/api/v1/predict-batch", None, &batch).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(resp.contains("rows[1].pps: missing"), "{resp}");
        let (_, features) = send(&st, "GET", "/api/v1/features", None).await;
        let features: Value = serde_json::from_str(&features).unwrap();
        assert_eq!(features.as_array().unwrap().len(), FEATURE_NAMES.len());
        assert_eq!(features[3]["max"], 1.0, "{}", features[3]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The UI's files need no token even where reads do (the page asks for one), and come
    /// with a policy that lets them load and reach nothing but this server.
    #[tokio::test]
    async fn the_ui_is_public_and_locked_down() {
        use tower::ServiceExt as _;
        let dir = std::env::temp_dir().join(format!("astra-api-ui-{}", std::process::id()));
        let st = state(&dir, true);
        for (path, kind) in [
            ("/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
        ] {
            let req = axum::http::Request::builder()
                .uri(path)
                .header(header::HOST, "localhost:9478")
                .body(axum::body::Body::empty())
                .unwrap();
            let r = router(st.clone()).oneshot(req).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], crate::agent::ui::CSP);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(
            send(&st, "GET", "/api/v1/alerts", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&st, "GET", "/ui/nope.js", None).await.0,
            StatusCode::NOT_FOUND
        );
    }

    /// Every read the OpenAPI document lists answers without parameters, as the integration
    /// test and schemathesis call them; tags also answer for one list and refuse a wrong one.
    #[tokio::test]
    async fn every_listed_read_answers() {
        let dir = std::env::temp_dir().join(format!("astra-api-reads-{}", std::process::id()));
        let st = state(&dir, false);
        st.store
            .upsert(&crate::store::StoredEntry {
                kind: ListKind::Block,
                net: "198.18.0.7/32".parse().unwrap(),
                expires_at: None,
                reason: "t".into(),
                source: crate::store::EntrySource::Manual,
                created_at: 1,
                tag: "feed".into(),
                rate: None,
                protect: None,
            })
            .unwrap();
        let (_, doc) = send(&st, "GET", "/api/v1/openapi.json", None).await;
        let doc: Value = serde_json::from_str(&doc).unwrap();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            if ops.get("get").is_none()
                || path.contains('{')
                || path.ends_with("/stream")
                || path == "/readyz"
            {
                continue;
            }
            let (code, body) = send(&st, "GET", path, None).await;
            if body.contains("no maps pinned") {
                continue; // reads of the kernel's maps: the integration test has them
            }
            assert_eq!(code, StatusCode::OK, "GET {path}: {body}");
        }
        let (_, all) = send(&st, "GET", "/api/v1/tags", None).await;
        let (_, block) = send(&st, "GET", "/api/v1/tags?list=block", None).await;
        assert_eq!(all, block, "only the blocklist has entries");
        assert!(block.contains(r#""list":"block""#), "{block}");
        let (code, body) = send(&st, "GET", "/api/v1/tags?list=nope", None).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    }

    #[test]
    fn loopback_hosts_with_and_without_ports() {
        for h in [
            "localhost",
            "LOCALHOST:9478",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9478",
            "::1",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:9478",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "localhost.evil",
            "",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn login_events_are_checked_field_by_field() {
        let now = 1_700_000_000_000;
        let ok = json!({"src_ip": "198.18.0.7", "dst_port": 22, "event_type": "login_failed",
            "ts": 1_699_999_990.5, "protocol": "ssh", "bytes": 120, "dst_ip": "198.18.1.1"});
        assert_eq!(
            login_event(0, &ok, now).unwrap(),
            LoginEvent {
                ts_ms: 1_699_999_990_500,
                src_ip: "198.18.0.7".parse().unwrap(),
                dst_port: 22,
                failed: true,
            }
        );
        let mut rfc = ok.clone();
        rfc["ts"] = json!("2023-11-14T22:13:10Z");
        assert_eq!(login_event(0, &rfc, now).unwrap().ts_ms, 1_699_999_990_000);
        let bad = |field: &str, v: Value| {
            let mut e = ok.clone();
            if v.is_null() {
                e.as_object_mut().unwrap().remove(field);
            } else {
                e[field] = v;
            }
            login_event(3, &e, now).unwrap_err().to_string()
        };
        assert_eq!(
            bad("src_ip", json!("198.18.0.300")),
            "events[3].src_ip: not an IP address"
        );
        assert_eq!(bad("src_ip", Value::Null), "events[3].src_ip: missing");
        assert!(bad("dst_port", json!(0)).starts_with("events[3].dst_port:"));
        assert!(bad("dst_port", json!(70000)).starts_with("events[3].dst_port:"));
        assert!(bad("event_type", json!("logout")).contains("'logout' is not login_failed"));
        assert!(bad("ts", json!(1_800_000_000)).contains("in the future"));
        assert_eq!(bad("user", json!("root")), "events[3].user: unknown field");
        assert_eq!(
            login_event(1, &json!([1]), now).unwrap_err().to_string(),
            "events[1]: expected an object"
        );
    }

    #[test]
    fn openapi_document_is_well_formed() {
        let doc = openapi();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 12);
        // Every mutating operation declares the bearer requirement and a 401.
        for (p, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                if method == "post" || method == "delete" {
                    assert!(op["security"].is_array(), "{method} {p}");
                    assert!(op["responses"]["401"].is_object(), "{method} {p}");
                }
            }
        }
    }
}
