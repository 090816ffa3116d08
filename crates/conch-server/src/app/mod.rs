//! The family app's JSON API under `/api/` (docs/app-api.md): accounts and sessions,
//! conversations with streamed replies, characters and their cards, feedback and exports. The
//! domain and storage are `conch_app`; this module is HTTP only.

mod auth;
mod generate;
mod memoir;

use crate::{ApiError, AppState, ServerError};
use auth::{check_origin, client_address, session_cookie, too_many_attempts, SignedIn};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use conch_app::{
    AppError, CharacterFields, ExportFormat, Feedback, NewConversation, Session, Store,
};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) use auth::LoginLimiter;

/// What the app's routes share: the store, the login limiter and memoir mode's speech models.
pub(crate) struct AppContext {
    pub store: Store,
    limiter: LoginLimiter,
    speech: std::sync::Arc<memoir::Speech>,
}

impl AppContext {
    pub(crate) fn new(store: Store, config: &crate::ServerConfig) -> AppContext {
        AppContext {
            store,
            limiter: LoginLimiter::default(),
            speech: memoir::Speech::new(config.speech_dir.as_deref()),
        }
    }
}

impl AppState {
    /// The server with the family app over `store`. Replies that a previous run left
    /// `streaming` (it was killed mid-reply) are marked `stopped`.
    pub async fn with_store(
        model: std::sync::Arc<conch_engine::LoadedModel>,
        config: &crate::ServerConfig,
        store: Store,
    ) -> Result<AppState, ServerError> {
        store
            .stop_interrupted_replies()
            .await
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        let state = AppState::build(model, config, Some(AppContext::new(store, config)))?;
        memoir::spawn_transcription_retries(&state);
        Ok(state)
    }

    /// Opens the app's database named by `config` (`database_url`, else SQLite in `data_dir`,
    /// else in the default data directory) and starts the server over it.
    pub async fn open(
        model: std::sync::Arc<conch_engine::LoadedModel>,
        config: &crate::ServerConfig,
    ) -> Result<AppState, ServerError> {
        let store = open_store(config).await?;
        AppState::with_store(model, config, store).await
    }

    pub(crate) fn app(&self) -> Result<&AppContext, ApiError> {
        self.inner.app.as_ref().ok_or_else(|| {
            auth::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_app",
                "this server runs without the app's database",
            )
        })
    }

    /// The app's store (the server must have been started with one).
    pub fn store(&self) -> Option<&Store> {
        self.inner.app.as_ref().map(|a| &a.store)
    }
}

/// The store `config` names.
pub async fn open_store(config: &crate::ServerConfig) -> Result<Store, ServerError> {
    let opened = match (&config.database_url, &config.data_dir) {
        (Some(url), _) => Store::open(url).await,
        (None, Some(dir)) => Store::open_data_dir(dir).await,
        (None, None) => {
            let dir = conch_app::default_data_dir().ok_or_else(|| {
                ServerError::Config(
                    "no data directory: set HOME or XDG_DATA_HOME, or pass a data directory".into(),
                )
            })?;
            Store::open_data_dir(&dir).await
        }
    };
    opened.map_err(|e| ServerError::Storage(e.to_string()))
}

/// `AppError` as the API's error JSON and status.
pub(crate) fn api_error(e: AppError) -> ApiError {
    let (status, code) = match &e {
        AppError::BadInput(_) => (StatusCode::BAD_REQUEST, "bad_input"),
        AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        AppError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
        AppError::Storage(_) | AppError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    };
    auth::error(status, code, &e.to_string())
}

/// Parses a JSON body into `T`, naming the problem when it does not fit.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            format!("the body is not the expected JSON: {}", e.inner())
        } else {
            format!("'{path}': {}", e.inner())
        };
        auth::error(StatusCode::BAD_REQUEST, "bad_input", &message)
    })
}

/// The `/api/*` routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/setup", get(setup))
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/{id}", axum::routing::delete(delete_user))
        .route("/api/models", get(models))
        .route(
            "/api/conversations",
            get(list_conversations).post(create_conversation),
        )
        .route(
            "/api/conversations/{id}",
            get(get_conversation)
                .patch(rename_conversation)
                .delete(delete_conversation),
        )
        .route("/api/conversations/{id}/messages", post(generate::send))
        .route("/api/messages/{id}/regenerate", post(generate::regenerate))
        .route("/api/messages/{id}/edit", post(generate::edit))
        .route("/api/messages/{id}/choose", post(choose))
        .route(
            "/api/messages/{id}/feedback",
            put(set_feedback).delete(delete_feedback),
        )
        .route("/api/admin/export", get(export))
        .route(
            "/api/characters",
            get(list_characters).post(create_character),
        )
        .route("/api/characters/import", post(import_character))
        .route(
            "/api/characters/{id}",
            get(get_character)
                .put(update_character)
                .delete(delete_character),
        )
        .route(
            "/api/characters/{id}/avatar",
            get(get_avatar).put(set_avatar),
        )
        .route("/api/characters/{id}/publish", post(publish_character))
        .route("/api/characters/{id}/copy", post(copy_character))
        .route("/api/characters/{id}/card", get(character_card))
        .merge(memoir::routes())
}

fn signed_in_body(session: &Session) -> Value {
    json!({ "user": session.user, "csrf_token": session.csrf_token })
}

async fn setup(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let needs_admin = state.app()?.store.needs_admin().await.map_err(api_error)?;
    Ok(Json(json!({ "needs_admin": needs_admin })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
    display_name: Option<String>,
}

/// A response that starts `session` (its cookie) with `status`.
fn session_response(headers: &HeaderMap, session: &Session, status: StatusCode) -> Response {
    let mut response = (status, Json(signed_in_body(session))).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(headers, Some(&session.token)),
    );
    response
}

async fn signup(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    check_origin(&headers)?;
    let store = &state.app()?.store;
    let c: Credentials = body(&bytes)?;
    let user = store
        .create_first_admin(&c.username, &c.password, c.display_name.as_deref())
        .await
        .map_err(api_error)?;
    let session = store.create_session(&user.id).await.map_err(api_error)?;
    Ok(session_response(&headers, &session, StatusCode::CREATED))
}

async fn login(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, request_body) = request.into_parts();
    check_origin(&parts.headers)?;
    let app = state.app()?;
    let bytes = axum::body::to_bytes(request_body, 64 << 10)
        .await
        .map_err(|_| {
            auth::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the body is too large",
            )
        })?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        username: String,
        password: String,
    }
    let c: Login = body(&bytes)?;
    let address = client_address(&parts.extensions);
    if let Some(wait) = app.limiter().blocked_for(&c.username, &address) {
        return Ok(too_many_attempts(wait));
    }
    match app.store.verify_password(&c.username, &c.password).await {
        Ok(user) => {
            app.limiter().record_success(&c.username);
            let session = app
                .store
                .create_session(&user.id)
                .await
                .map_err(api_error)?;
            Ok(session_response(&parts.headers, &session, StatusCode::OK))
        }
        Err(AppError::BadCredentials) => {
            app.limiter().record_failure(&c.username, &address);
            Err(api_error(AppError::BadCredentials))
        }
        Err(e) => Err(api_error(e)),
    }
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    SignedIn(session): SignedIn,
) -> Result<Response, ApiError> {
    state
        .app()?
        .store
        .delete_session(&session.token)
        .await
        .map_err(api_error)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&headers, None));
    Ok(response)
}

async fn me(SignedIn(session): SignedIn) -> Json<Value> {
    Json(signed_in_body(&session))
}

async fn list_users(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
) -> Result<Json<Value>, ApiError> {
    let users = state
        .app()?
        .store
        .list_users(&s.user.id)
        .await
        .map_err(api_error)?;
    Ok(Json(json!(users)))
}

async fn create_user(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewUser {
        username: String,
        password: String,
        display_name: Option<String>,
        #[serde(default)]
        is_admin: bool,
    }
    let n: NewUser = body(&bytes)?;
    let user = state
        .app()?
        .store
        .create_user(
            &s.user.id,
            &n.username,
            &n.password,
            n.display_name.as_deref(),
            n.is_admin,
        )
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(json!(user))).into_response())
}

async fn delete_user(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app()?
        .store
        .delete_user(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn models(State(state): State<AppState>, _: SignedIn) -> Json<Value> {
    Json(json!([{ "id": state.inner.model.name, "context_length": state.inner.context }]))
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

async fn list_conversations(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Query(search): Query<Search>,
) -> Result<Json<Value>, ApiError> {
    let list = state
        .app()?
        .store
        .list_conversations(&s.user.id, search.q.as_deref())
        .await
        .map_err(api_error)?;
    Ok(Json(json!(list)))
}

async fn create_conversation(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let new: NewConversation = if bytes.is_empty() {
        NewConversation::default()
    } else {
        body(&bytes)?
    };
    if let Some(model) = &new.model {
        state.check_model(Some(model))?;
    }
    let conversation = state
        .app()?
        .store
        .create_conversation(&s.user.id, new)
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(json!(conversation))).into_response())
}

async fn get_conversation(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = &state.app()?.store;
    let conversation = store
        .conversation(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    let messages = store.messages(&s.user.id, &id).await.map_err(api_error)?;
    Ok(Json(
        json!({ "conversation": conversation, "messages": messages }),
    ))
}

async fn rename_conversation(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rename {
        title: String,
    }
    let r: Rename = body(&bytes)?;
    let conversation = state
        .app()?
        .store
        .rename_conversation(&s.user.id, &id, &r.title)
        .await
        .map_err(api_error)?;
    Ok(Json(json!(conversation)))
}

async fn delete_conversation(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app()?
        .store
        .delete_conversation(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn choose(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app()?
        .store
        .choose(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_feedback(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rating {
        rating: i64,
        #[serde(default)]
        reasons: Vec<String>,
        comment: Option<String>,
    }
    let r: Rating = body(&bytes)?;
    let feedback = state
        .app()?
        .store
        .set_feedback(
            &s.user.id,
            &id,
            Feedback {
                rating: r.rating,
                reasons: r.reasons,
                comment: r.comment,
            },
        )
        .await
        .map_err(api_error)?;
    Ok(Json(json!(feedback)))
}

async fn delete_feedback(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app()?
        .store
        .delete_feedback(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ExportQuery {
    format: String,
}

async fn export(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let format: ExportFormat = q.format.parse().map_err(api_error)?;
    let lines = state
        .app()?
        .store
        .export_as(&s.user.id, format)
        .await
        .map_err(api_error)?;
    let disposition = format!("attachment; filename=\"conch-{}.jsonl\"", format.name());
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        lines,
    )
        .into_response())
}

async fn list_characters(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
) -> Result<Json<Value>, ApiError> {
    let list = state
        .app()?
        .store
        .list_characters(&s.user.id)
        .await
        .map_err(api_error)?;
    Ok(Json(json!(list)))
}

async fn create_character(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let fields: CharacterFields = body(&bytes)?;
    let character = state
        .app()?
        .store
        .create_character(&s.user.id, fields)
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(json!(character))).into_response())
}

async fn get_character(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let character = state
        .app()?
        .store
        .character(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(Json(json!(character)))
}

async fn update_character(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let fields: CharacterFields = body(&bytes)?;
    let character = state
        .app()?
        .store
        .update_character(&s.user.id, &id, fields)
        .await
        .map_err(api_error)?;
    Ok(Json(json!(character)))
}

async fn delete_character(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app()?
        .store
        .delete_character(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_avatar(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<StatusCode, ApiError> {
    state
        .app()?
        .store
        .set_avatar(&s.user.id, &id, &bytes)
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_avatar(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state
        .app()?
        .store
        .avatar(&s.user.id, &id)
        .await
        .map_err(api_error)?
    {
        Some((bytes, kind)) => Ok((
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "private, no-cache".to_string()),
                // The type was sniffed from the bytes; browsers must not guess another.
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            ],
            bytes,
        )
            .into_response()),
        None => Err(api_error(AppError::NotFound("avatar"))),
    }
}

async fn publish_character(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Publish {
        published: bool,
    }
    let p: Publish = body(&bytes)?;
    let character = state
        .app()?
        .store
        .publish_character(&s.user.id, &id, p.published)
        .await
        .map_err(api_error)?;
    Ok(Json(json!(character)))
}

async fn copy_character(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let character = state
        .app()?
        .store
        .copy_character(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(json!(character))).into_response())
}

async fn import_character(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let store = &state.app()?.store;
    // The bytes say what they are; a PNG card sent as application/octet-stream still imports.
    let character = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        store.import_card_png(&s.user.id, &bytes).await
    } else {
        store.import_card_json(&s.user.id, &bytes).await
    }
    .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(json!(character))).into_response())
}

#[derive(Deserialize)]
struct CardQuery {
    format: Option<String>,
}

async fn character_card(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    Query(q): Query<CardQuery>,
) -> Result<Response, ApiError> {
    let store = &state.app()?.store;
    let character = store.character(&s.user.id, &id).await.map_err(api_error)?;
    let stem: String = character
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok((
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{stem}.json\""),
                ),
            ],
            character.card().to_string(),
        )
            .into_response()),
        "png" => {
            let png = store.card_png(&s.user.id, &id).await.map_err(api_error)?;
            Ok((
                [
                    (header::CONTENT_TYPE, "image/png".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{stem}.png\""),
                    ),
                ],
                png,
            )
                .into_response())
        }
        other => Err(auth::error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            &format!("unknown card format '{other}'; use json or png"),
        )),
    }
}
