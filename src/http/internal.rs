//! The internal listener: Raft messages, writes forwarded to the leader, leader reads,
//! cluster status and membership changes. Every request must present the cluster secret;
//! the public listener serves none of these paths.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::actors::SessionHandle;
use crate::auth::{self, Authenticator, Revocation};
use crate::metrics::Metrics;
use crate::raft::network::{path, Reply, POSTCARD};
use crate::raft::{Command, Formed, NodeId, Store};

/// What a forwarded answer adds to the client's message: the session id and encoding.
const ANSWER_SLACK: usize = 64 * 1024;

/// Largest bodies the internal listener reads, by route; larger ones get 413.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimits {
    /// Raft messages and forwarded writes: [`crate::raft::Config::internal_body_bytes`], so
    /// that an AppendEntries within `raft.max_append_bytes` and a snapshot chunk always
    /// fit, and nothing much larger is read into memory.
    pub raft: usize,
    /// A client's answer forwarded from another node: as large as the public listener
    /// takes (`http.max_body_bytes`), plus room for the envelope.
    pub answer: usize,
}

impl BodyLimits {
    /// The limits that agree with `config`.
    pub(crate) fn new(config: &crate::Config) -> Self {
        Self {
            raft: config.raft.internal_body_bytes(),
            answer: config.http.max_body_bytes.saturating_add(ANSWER_SLACK),
        }
    }
}

/// Management calls forwarded to the leader may wait for a learner to catch up.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// What the internal listener's handlers share.
pub(crate) struct Internal {
    pub store: Store,
    /// What `/metrics` renders.
    pub metrics: Metrics,
    pub secret: String,
    /// Records revocations; `None` with `--auth none`.
    pub authenticator: Option<Authenticator>,
    /// The trusted issuers, as configured: revocations must name one of them.
    pub issuers: Vec<String>,
    /// Ends legacy sessions revoked by id.
    pub sessions: SessionHandle,
    /// The public side's live sessions, where answers forwarded by other nodes go.
    pub public: web::Data<super::State>,
    /// What this node serves, for its report on `/cluster`.
    pub holdings: super::report::Holdings,
}

/// Where a node sends a client's answer that belongs to a request another node asked.
pub(crate) const ANSWER: &str = "/fleet/answer";

/// A client's answer to a server-to-client request, forwarded to the node that asked it.
#[derive(Serialize, Deserialize)]
pub(crate) struct ForwardedAnswer {
    /// The legacy session.
    pub session: String,
    /// The client's JSON-RPC response, as JSON text (postcard cannot carry JSON values).
    pub message: String,
}

/// Where a node forwards a `Last-Event-ID` GET for a stream this node holds.
pub(crate) const RESUME: &str = "/fleet/resume";

/// A resuming GET another node received for a stream this node holds. That node checked
/// the session is the caller's; the answer is the event stream, 404 when there is no such
/// stream here, 409 when it cannot be taken.
#[derive(Serialize, Deserialize)]
pub(crate) struct ForwardedResume {
    /// The legacy session.
    pub session: String,
    /// The `Last-Event-ID` the client sent.
    pub last_event_id: String,
}

/// Where a node forwards `notifications/cancelled` for a request not running on it.
pub(crate) const CANCEL: &str = "/fleet/cancel";

/// A cancellation another node received; answered with whether a request here stopped.
#[derive(Serialize, Deserialize)]
pub(crate) struct ForwardedCancel {
    /// The legacy session.
    pub session: String,
    /// The request's JSON-RPC id, as JSON text (postcard cannot carry JSON values).
    pub request: String,
}

/// Registers the internal routes, behind the cluster-secret check, reading bodies up to
/// `limits`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig, limits: BodyLimits) {
    cfg.app_data(web::PayloadConfig::new(limits.raft))
        .app_data(web::JsonConfig::default().limit(1 << 20))
        .service(
            super::secrets::routes(web::scope(""))
                .wrap(from_fn(require_secret))
                .route(path::APPEND, web::post().to(append))
                .route(path::VOTE, web::post().to(vote))
                .route(path::SNAPSHOT, web::post().to(snapshot))
                .route(path::WRITE, web::post().to(write))
                .route(path::WRITES, web::post().to(writes))
                .route(path::READ_INDEX, web::post().to(read_index))
                .route(path::APPLIED, web::post().to(applied))
                .route(path::ELECT, web::post().to(elect))
                .route("/cluster", web::get().to(status))
                .route("/metrics", web::get().to(scrape))
                .route("/cluster/init", web::post().to(init))
                .route("/cluster/join", web::post().to(join))
                .route("/cluster/leave", web::post().to(leave))
                .route(path::REMOVED, web::post().to(removed))
                .route(path::MEMBERS, web::get().to(members))
                .route("/fleet/reseal", web::post().to(reseal))
                .route("/auth/revoke", web::post().to(revoke))
                .route(RESUME, web::post().to(resume))
                .route(CANCEL, web::post().to(cancel))
                .route(
                    super::fanout::UPDATED,
                    web::post().to(super::fanout::updated),
                )
                .service(
                    web::resource(ANSWER)
                        .app_data(web::PayloadConfig::new(limits.answer))
                        .route(web::post().to(answer)),
                ),
        );
}

/// Refuses any request without `Authorization: Bearer <cluster secret>`.
async fn require_secret(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION);
    let presented = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let allowed = req
        .app_data::<web::Data<Internal>>()
        .is_some_and(|i| bool::from(presented.as_bytes().ct_eq(i.secret.as_bytes())));
    if !allowed {
        // Something was presented (in whatever form): it was wrong, not missing.
        let error = match header {
            None => "this listener requires the cluster secret",
            Some(_) => "this node refused the cluster secret presented (wrong secret?)",
        };
        // The presented value may be a secret of something else: never log it.
        tracing::warn!(
            peer = ?req.peer_addr(),
            path = req.path(),
            presented = header.is_some(),
            "refused an internal request: {error}"
        );
        let response = HttpResponse::Unauthorized().json(json!({ "error": error }));
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

pub(super) fn postcard_body<T: Serialize>(value: &T) -> HttpResponse {
    match postcard::to_stdvec(value) {
        Ok(bytes) => HttpResponse::Ok().content_type(POSTCARD).body(bytes),
        Err(e) => {
            tracing::error!(error = %e, "could not encode an internal answer");
            HttpResponse::InternalServerError().finish()
        }
    }
}

pub(super) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<HttpResponse>> {
    crate::raft::wire::decode(body).map_err(|e| {
        Box::new(
            HttpResponse::BadRequest().json(json!({ "error": format!("malformed body: {e}") })),
        )
    })
}

async fn append(state: web::Data<Internal>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let sent_ms = req
        .headers()
        .get(crate::raft::network::SENT_AT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let request: openraft::raft::AppendEntriesRequest<crate::raft::TypeConfig> = match decode(&body)
    {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let leader_commit = request.leader_commit.map(|l| l.index);
    let result = state.store.raft().append_entries(request).await;
    // Only the current leader's messages count as news: a deposed one gets HigherVote.
    if matches!(
        result,
        Ok(openraft::raft::AppendEntriesResponse::Success
            | openraft::raft::AppendEntriesResponse::PartialSuccess(_)
            | openraft::raft::AppendEntriesResponse::Conflict)
    ) {
        state.store.heard_from_leader(leader_commit, sent_ms);
    }
    postcard_body(&Reply(result))
}

async fn vote(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    let request: openraft::raft::VoteRequest<NodeId> = match decode(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if let Some(candidate) = request.vote.leader_id().voted_for() {
        let last = request.last_log_id.map(|l| l.index);
        if state.store.is_removed_candidate(candidate, last) {
            // Tell it (its network layer notes the status) instead of letting its term
            // disturb the group.
            tracing::info!(
                node = candidate,
                "refused a vote request from a removed node"
            );
            return HttpResponse::build(
                actix_web::http::StatusCode::from_u16(crate::raft::network::NOT_A_MEMBER)
                    .unwrap_or(actix_web::http::StatusCode::GONE),
            )
            .json(json!({ "error": "not a member of this group" }));
        }
    }
    postcard_body(&Reply(state.store.raft().vote(request).await))
}

async fn snapshot(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    match decode(&body) {
        Ok(request) => postcard_body(&Reply(state.store.raft().install_snapshot(request).await)),
        Err(response) => *response,
    }
}

async fn write(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    match decode::<Command>(&body) {
        Ok(command) => postcard_body(&state.store.write_as_leader(command).await),
        Err(response) => *response,
    }
}

async fn writes(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    match decode::<Vec<Command>>(&body) {
        Ok(commands) => postcard_body(&state.store.write_all_as_leader(commands).await),
        Err(response) => *response,
    }
}

/// Stands for election now: the leader is stepping down in this node's favour.
async fn elect(state: web::Data<Internal>) -> HttpResponse {
    let started = state.store.raft().trigger().elect().await.is_ok();
    tracing::info!(started, "standing for election at the leader's request");
    postcard_body(&started)
}

async fn applied(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    match decode::<u64>(&body) {
        Ok(index) => postcard_body(&state.store.wait_applied(index).await),
        Err(response) => *response,
    }
}

async fn read_index(state: web::Data<Internal>) -> HttpResponse {
    postcard_body(&state.store.read_index().await)
}

/// This node's own report; see [`super::report::NodeReport`].
async fn status(state: web::Data<Internal>) -> HttpResponse {
    HttpResponse::Ok().json(super::report::own(&state))
}

/// Every member's own report, asked by this node (`cluster status`).
async fn members(state: web::Data<Internal>) -> HttpResponse {
    HttpResponse::Ok().json(super::report::members(&state).await)
}

/// Prometheus scrapes this node's metrics.
async fn scrape(state: web::Data<Internal>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}

#[derive(Deserialize)]
struct InitBody {
    peers: BTreeMap<NodeId, String>,
}

async fn init(state: web::Data<Internal>, body: web::Json<InitBody>) -> HttpResponse {
    let body = body.into_inner();
    if body.peers.is_empty() {
        return HttpResponse::BadRequest().json(json!({ "error": "peers is empty" }));
    }
    let list = |peers: &BTreeMap<NodeId, String>| {
        peers
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    match state.store.form(body.peers.clone()).await {
        Ok(Formed::New) => HttpResponse::Ok().json(json!({ "initialized": true })),
        Ok(Formed::Already) => {
            HttpResponse::Ok().json(json!({ "initialized": false, "already_formed": true }))
        }
        Ok(Formed::Other(voters)) => HttpResponse::Conflict().json(json!({
            "error": format!(
                "this node already belongs to a group whose voters are `{}`, not the `{}` \
                 given: a formed group changes with `cluster join` and `cluster leave`, never \
                 `cluster init`",
                list(&voters),
                list(&body.peers)
            ),
            "voters": voters,
        })),
        Err(e) => HttpResponse::Conflict().json(json!({ "error": e.to_string() })),
    }
}

#[derive(Serialize, Deserialize)]
struct JoinBody {
    node_id: NodeId,
    addr: String,
}

#[derive(Serialize, Deserialize)]
struct LeaveBody {
    node_id: NodeId,
}

async fn join(
    state: web::Data<Internal>,
    req: HttpRequest,
    body: web::Json<JoinBody>,
) -> HttpResponse {
    let body = body.into_inner();
    if let Some(forwarded) = forward_unless_leader(&state, &req, &body).await {
        return forwarded;
    }
    match state.store.join(body.node_id, body.addr).await {
        Ok(()) => {
            let voters = state.store.voter_count();
            let mut answer = json!({ "joined": body.node_id, "voters": voters });
            if voters % 2 == 0 {
                let warning = format!(
                    "the group now has {voters} voters, an even number: it survives the loss \
                     of {} of them, no more than with {} voters, while every write needs {}; \
                     add or remove one voter to make the count odd",
                    (voters - 1) / 2,
                    voters - 1,
                    voters / 2 + 1
                );
                tracing::warn!(voters, "{warning}");
                answer["warning"] = json!(warning);
            }
            HttpResponse::Ok().json(answer)
        }
        Err(e) => HttpResponse::Conflict().json(json!({ "error": e.to_string() })),
    }
}

/// The leader says `cluster leave` removed this node, by the membership at the log index
/// the body carries: stop serving and standing for election.
async fn removed(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    let removal: u64 = match decode(&body) {
        Ok(index) => index,
        Err(response) => return *response,
    };
    state.store.mark_removed_at(
        "told by the leader that `cluster leave` removed it",
        removal,
    );
    postcard_body(&true)
}

async fn leave(
    state: web::Data<Internal>,
    req: HttpRequest,
    body: web::Json<LeaveBody>,
) -> HttpResponse {
    let body = body.into_inner();
    if let Some(forwarded) = forward_unless_leader(&state, &req, &body).await {
        return forwarded;
    }
    match state.store.leave(body.node_id).await {
        Ok(()) => HttpResponse::Ok().json(json!({ "left": body.node_id })),
        Err(e) => HttpResponse::Conflict().json(json!({ "error": e.to_string() })),
    }
}

/// Membership changes run on the leader: anywhere else, relay the call and its answer.
async fn forward_unless_leader<T: Serialize>(
    state: &Internal,
    req: &HttpRequest,
    body: &T,
) -> Option<HttpResponse> {
    let Some((leader, addr)) = state.store.leader() else {
        return Some(
            HttpResponse::ServiceUnavailable().json(json!({ "error": "no leader is known" })),
        );
    };
    if leader == state.store.id() {
        return None;
    }
    let body = serde_json::to_value(body).ok()?;
    let client = state.store.client().clone();
    let path = req.path().to_owned();
    let answer = client
        .json(&addr, &path, Some(&body), MANAGEMENT_TIMEOUT)
        .await;
    Some(match answer {
        Ok((status, mut value)) => HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY),
        )
        .json({
            // So the command can say which node made the change.
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "forwarded_to".to_owned(),
                    json!({ "node_id": leader, "addr": addr }),
                );
            }
            value
        }),
        Err(e) => HttpResponse::BadGateway()
            .json(json!({ "error": format!("leader {leader} at {addr}: {e}") })),
    })
}

async fn reseal(state: web::Data<Internal>) -> HttpResponse {
    match state.store.reseal().await {
        Ok(count) => HttpResponse::Ok().json(json!({ "resealed": count })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() })),
    }
}

/// What `POST /auth/revoke` takes: a user (`issuer` and `subject`), one token (`issuer`
/// and `token_id`), or one legacy session (`session`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    token_id: Option<String>,
    #[serde(default)]
    session: Option<String>,
}

/// Revokes through the fleet store: once applied, every node refuses what was revoked.
async fn revoke(state: web::Data<Internal>, body: web::Json<RevokeBody>) -> HttpResponse {
    let body = body.into_inner();
    if let Some(session) = body.session {
        return match state.sessions.delete(&session).await {
            Ok(existed) => {
                HttpResponse::Ok().json(json!({ "revoked": "session", "existed": existed }))
            }
            Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() })),
        };
    }
    let Some(authenticator) = &state.authenticator else {
        return HttpResponse::Conflict().json(
            json!({ "error": "authentication is off on this node: there is nothing to revoke" }),
        );
    };
    let (Some(given), subject, token_id) = (body.issuer, body.subject, body.token_id) else {
        return HttpResponse::BadRequest().json(json!({
            "error": "give issuer with subject, issuer with token_id, or session"
        }));
    };
    // Stored under any other spelling than the configured one, a revocation would match
    // no token and the command would report a success that refuses nothing.
    let issuer = match auth::resolve_issuer(&state.issuers, &given) {
        Ok(issuer) => issuer,
        Err(unknown) => {
            return HttpResponse::BadRequest().json(json!({
                "error": unknown.to_string(),
                "configured_issuers": unknown.configured,
            }))
        }
    };
    let (revocation, what) = match (subject, token_id) {
        (Some(subject), None) => (
            Revocation::Subject {
                issuer: issuer.clone(),
                subject,
            },
            "subject",
        ),
        (None, Some(token_id)) => (
            Revocation::TokenId {
                issuer: issuer.clone(),
                token_id,
            },
            "token",
        ),
        _ => {
            return HttpResponse::BadRequest().json(json!({
                "error": "give issuer with subject, issuer with token_id, or session"
            }))
        }
    };
    match authenticator.revoke(revocation).await {
        Ok(unconfirmed) => {
            if unconfirmed.is_empty() {
                tracing::info!(what, "revocation recorded and applied by every member");
            } else {
                tracing::warn!(
                    what,
                    ?unconfirmed,
                    "revocation recorded; some members did not confirm they applied it"
                );
            }
            HttpResponse::Ok().json(json!({
                "revoked": what,
                "issuer": issuer,
                "unconfirmed_members": unconfirmed,
            }))
        }
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() })),
    }
}

/// Delivers an answer another node received; answers whether a request here took it.
async fn answer(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    let forwarded: ForwardedAnswer = match decode(&body) {
        Ok(f) => f,
        Err(response) => return *response,
    };
    let message = serde_json::from_str(&forwarded.message)
        .ok()
        .and_then(|v| crate::mcp::Message::from_value(v).ok());
    let Some(crate::mcp::Message::Response { id, outcome }) = message else {
        return postcard_body(&false);
    };
    let taken = state
        .public
        .live
        .existing(&forwarded.session)
        .is_some_and(|live| live.outbound.answer(&id, outcome));
    postcard_body(&taken)
}

/// Resumes, for another node's client, a stream this node holds.
async fn resume(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    let forwarded: ForwardedResume = match decode(&body) {
        Ok(f) => f,
        Err(response) => return *response,
    };
    let Some(live) = state.public.live.existing(&forwarded.session) else {
        return HttpResponse::NotFound().finish();
    };
    let resumed = super::forwarded::resume_here(
        &state.public,
        &forwarded.session,
        live,
        &forwarded.last_event_id,
    );
    match resumed {
        Ok(response) => response,
        Err(super::live::AttachError::Busy) => HttpResponse::Conflict().finish(),
        Err(_) => HttpResponse::NotFound().finish(),
    }
}

/// Cancels a request of a session running here, for another node's client; answers
/// whether one stopped.
async fn cancel(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    let forwarded: ForwardedCancel = match decode(&body) {
        Ok(f) => f,
        Err(response) => return *response,
    };
    let Ok(id) = serde_json::from_str::<serde_json::Value>(&forwarded.request) else {
        return postcard_body(&false);
    };
    let stopped = state
        .public
        .live
        .existing(&forwarded.session)
        .is_some_and(|live| live.inflight.cancel(&id));
    postcard_body(&stopped)
}
