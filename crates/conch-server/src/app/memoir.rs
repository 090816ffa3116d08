//! Memoir mode's routes (docs/memoir-api.md): projects and their plans, the interview (one
//! question at a time, typed or recorded answers, model-written follow-ups), offline speech,
//! chapter drafts traceable to the transcript, and the book's exports with the public pages of
//! each chapter's recordings.
//!
//! Storage is `conch_app`, the interviewer policy, drafting checks and book rendering are
//! `conch_memoir`, speech is `conch_speech` (blocking, so it runs on `spawn_blocking`), and the
//! model runs on the server's engine thread like the chat's replies.
//!
//! A recording is stored before it is transcribed; a transcription that fails leaves it
//! `pending` for the retry task (or `failed` when the audio cannot be decoded), and the
//! interview moves on meanwhile, so nothing the teller said waits on the speech models.

use super::auth::{error, SignedIn};
use super::{api_error, body};
use crate::engine::{Event, Job, EVENTS_PER_SEQUENCE};
use crate::{chat_prompt, ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use conch_app::{
    AppError, MemoirChapterDraft, MemoirProject, MemoirRecording, MemoirTurn, RecordingStatus,
    Store, MAX_RECORDING,
};
use conch_engine::{GenerateOptions, SamplingParams};
use conch_memoir::book::{render_epub, render_markdown, render_pdf, Book, BookChapter, BookFont};
use conch_memoir::draft::{
    check_draft, drafting_messages, merge_redraft, parse_draft, BookParagraph, DraftParagraph,
    MergeMode, Segment, Speaker, Verdict,
};
use conch_memoir::interview::{
    follow_up_messages, next_step, parse_follow_up, parse_topic_judgement,
    topic_judgement_messages, ChapterTranscript, InterviewPolicy, InterviewStep, InterviewTurn,
    TopicJudgement, TurnKind,
};
use conch_memoir::plan::{MemoirPlan, PlanChapter, PlanQuestion};
use conch_memoir::{ChatMessage, Language, MemoirError};
use conch_speech::{SpeechConfig, SpeechError, SpeechService};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Tokens for a follow-up question, a MORE/DONE judgement and a chapter draft at most.
const FOLLOW_UP_TOKENS: usize = 96;
const JUDGEMENT_TOKENS: usize = 8;
const DRAFT_TOKENS: usize = 1536;
/// How often the retry task looks for recordings to transcribe again.
const RETRY_TICK: Duration = Duration::from_secs(20);
/// The wait before the first retry of a failed transcription; it doubles with every attempt.
const FIRST_RETRY_MS: i64 = 30_000;
const LONGEST_RETRY_MS: i64 = 6 * 3600 * 1000;
/// Model replies that could not be used before the interview gives up on the current topic.
const ADVANCE_ROUNDS: usize = 6;
const MAX_TTS_CHARS: usize = 2_000;
/// What the policy sees for an answer whose recording is not transcribed yet.
const PENDING_ANSWER: &str = "(answer recorded; transcript pending)";

/// The offline speech models, started on first use and shared by every request.
pub(crate) struct Speech {
    config: SpeechConfig,
    service: Mutex<Option<Arc<SpeechService>>>,
}

impl Speech {
    pub(crate) fn new(speech_dir: Option<&std::path::Path>) -> Arc<Speech> {
        let config = match speech_dir {
            Some(dir) => SpeechConfig::new(dir),
            None => SpeechConfig::default(),
        };
        Arc::new(Speech {
            config,
            service: Mutex::new(None),
        })
    }

    fn installed(&self) -> bool {
        self.config.worker_command.is_some() || self.config.is_installed()
    }

    fn not_installed(&self) -> SpeechError {
        SpeechError::NotInstalled(format!(
            "nothing usable in {}",
            self.config.speech_dir.display()
        ))
    }

    /// The running service, starting it on first use. Blocking.
    fn service(&self) -> Result<Arc<SpeechService>, SpeechError> {
        let mut service = self.service.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = &*service {
            return Ok(running.clone());
        }
        if !self.installed() {
            return Err(self.not_installed());
        }
        let started = Arc::new(SpeechService::start(self.config.clone())?);
        *service = Some(started.clone());
        Ok(started)
    }

    /// Runs `work` with the service on a blocking thread.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&SpeechService) -> Result<T, SpeechError> + Send + 'static,
    ) -> Result<T, SpeechError> {
        let speech = self.clone();
        tokio::task::spawn_blocking(move || work(&*speech.service()?))
            .await
            .unwrap_or_else(|e| Err(SpeechError::Failed(format!("the speech task failed: {e}"))))
    }
}

fn speech_unavailable(e: &SpeechError) -> ApiError {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "speech_unavailable",
        &e.to_string(),
    )
}

fn speech_error(e: SpeechError) -> ApiError {
    match e {
        SpeechError::NotInstalled(_) => speech_unavailable(&e),
        SpeechError::BadRequest(_) | SpeechError::BadAudio(_) => {
            error(StatusCode::BAD_REQUEST, "bad_input", &e.to_string())
        }
        e => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "speech_unavailable",
            &e.to_string(),
        ),
    }
}

fn memoir_error(e: MemoirError) -> ApiError {
    error(StatusCode::BAD_REQUEST, "bad_input", &e.to_string())
}

fn model_failed(message: &str) -> ApiError {
    error(StatusCode::BAD_GATEWAY, "model_failed", message)
}

/// Starts the task that transcribes pending recordings again, with backoff. It ends when the
/// server does.
pub(crate) fn spawn_transcription_retries(state: &AppState) {
    let server = Arc::downgrade(&state.inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETRY_TICK).await;
            let Some(inner) = server.upgrade() else { break };
            retry_due_recordings(&AppState { inner }).await;
        }
    });
}

async fn retry_due_recordings(state: &AppState) {
    let Ok(app) = state.app() else { return };
    if !app.speech.installed() {
        return;
    }
    let Ok(due) = app.store.due_memoir_recordings(4).await else {
        return;
    };
    for (owner, recording_id) in due {
        let Ok(recording) = app.store.memoir_recording(&owner, &recording_id).await else {
            continue;
        };
        let Ok(project) = app
            .store
            .memoir_project(&owner, &recording.project_id)
            .await
        else {
            continue;
        };
        let Ok(language) = language_of(&project) else {
            continue;
        };
        // A failure is recorded on the recording itself; nobody waits for this one.
        let _ = transcribe(&app.speech, &app.store, &owner, &recording_id, language).await;
    }
}

/// Transcribes a stored recording and records the outcome: the transcript (which becomes the
/// turn's answer when it has none), or the error with the time of the next attempt.
async fn transcribe(
    speech: &Arc<Speech>,
    store: &Store,
    user: &str,
    recording_id: &str,
    language: Language,
) -> Result<(MemoirRecording, Option<SpeechError>), ApiError> {
    let (mime, audio) = store
        .memoir_recording_audio(user, recording_id)
        .await
        .map_err(api_error)?;
    // One file per attempt: the upload handler and the retry task never share one.
    static ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let file = std::env::temp_dir().join(format!(
        "conch-memoir-{recording_id}-{}-{}.{}",
        std::process::id(),
        ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        audio_extension(&mime)
    ));
    let code = speech_language(language);
    let outcome = speech
        .run(move |service| {
            std::fs::write(&file, &audio).map_err(|e| {
                SpeechError::Failed(format!("cannot write {}: {e}", file.display()))
            })?;
            let transcript = service.transcribe(&file, Some(code));
            let _ = std::fs::remove_file(&file);
            transcript
        })
        .await;
    match outcome {
        Ok(transcript) => {
            let recording = store
                .memoir_transcribed(user, recording_id, &transcript.text)
                .await
                .map_err(api_error)?;
            Ok((recording, None))
        }
        Err(e) => {
            let before = store
                .memoir_recording(user, recording_id)
                .await
                .map_err(api_error)?;
            let retry_at = e.is_transient().then(|| {
                let wait = FIRST_RETRY_MS
                    .saturating_mul(1i64 << before.attempts.clamp(0, 20))
                    .min(LONGEST_RETRY_MS);
                now_ms() + wait
            });
            let recording = store
                .memoir_transcription_failed(user, recording_id, &e.to_string(), retry_at)
                .await
                .map_err(api_error)?;
            Ok((recording, Some(e)))
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A file extension the worker's decoder recognises for a browser's content type.
fn audio_extension(mime: &str) -> &'static str {
    let essence = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "wav",
        "audio/ogg" | "audio/opus" => "ogg",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => "m4a",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/flac" | "audio/x-flac" => "flac",
        _ => "webm",
    }
}

fn speech_language(language: Language) -> &'static str {
    match language {
        Language::English => "en",
        Language::SimplifiedChinese => "zh",
    }
}

fn language_of(project: &MemoirProject) -> Result<Language, ApiError> {
    serde_json::from_value(json!(project.language)).map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("stored project language {:?} is unknown", project.language),
        )
    })
}

/// The project's plan, with the project's teller and language.
fn plan_of(project: &MemoirProject) -> Result<MemoirPlan, ApiError> {
    let mut plan = MemoirPlan::from_json(&project.plan).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("the stored plan is not valid: {e}"),
        )
    })?;
    plan.teller_name = project.teller_name.clone();
    plan.language = language_of(project)?;
    Ok(plan)
}

fn project_json(project: &MemoirProject) -> Result<Value, ApiError> {
    let plan: Value = serde_json::to_value(plan_of(project)?).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        )
    })?;
    Ok(json!({
        "id": project.id,
        "title": project.title,
        "teller_name": project.teller_name,
        "language": project.language,
        "plan": plan,
        "closed_chapters": project.closed_chapters,
        "share_token": project.share_token,
        "created_at": project.created_at,
        "updated_at": project.updated_at,
    }))
}

/// The transcript segment ids of a turn: its question, then its answer. Derived from the turn's
/// number, so they never change.
fn question_segment(turn: &MemoirTurn) -> u32 {
    (turn.seq * 2 - 1) as u32
}

fn answer_segment(turn: &MemoirTurn) -> u32 {
    (turn.seq * 2) as u32
}

fn recording_json(recording: &MemoirRecording) -> Value {
    json!({
        "id": recording.id,
        "turn_id": recording.turn_id,
        "mime": recording.mime,
        "bytes": recording.bytes,
        "status": recording.status,
        "transcript": recording.transcript,
        "attempts": recording.attempts,
        "last_error": recording.last_error,
        "created_at": recording.created_at,
        "audio_url": format!("/api/memoir/recordings/{}/audio", recording.id),
    })
}

fn turn_json(turn: &MemoirTurn, recordings: &[MemoirRecording]) -> Value {
    let own: Vec<Value> = recordings
        .iter()
        .filter(|r| r.turn_id == turn.id)
        .map(recording_json)
        .collect();
    json!({
        "id": turn.id,
        "project_id": turn.project_id,
        "chapter_id": turn.chapter_id,
        "kind": turn.kind,
        "question_id": turn.question_id,
        "question": turn.question,
        "answer": turn.answer,
        "answer_source": turn.answer_source,
        "question_segment": question_segment(turn),
        "answer_segment": answer_segment(turn),
        "recordings": own,
        "asked_at": turn.asked_at,
        "answered_at": turn.answered_at,
    })
}

fn question_json(turn: &MemoirTurn, plan: &MemoirPlan) -> Value {
    let chapter_title = plan
        .chapter(&turn.chapter_id)
        .map_or("", |chapter| chapter.title.as_str());
    json!({
        "turn_id": turn.id,
        "chapter_id": turn.chapter_id,
        "chapter_title": chapter_title,
        "kind": turn.kind,
        "text": turn.question,
        "language": plan.language.tag(),
    })
}

/// The `/api/memoir/*` routes and the public recordings pages.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/memoir/projects",
            get(list_projects).post(create_project),
        )
        .route(
            "/api/memoir/projects/{id}",
            get(get_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route(
            "/api/memoir/projects/{id}/plan",
            axum::routing::put(set_plan),
        )
        .route(
            "/api/memoir/projects/{id}/chapters/{chapter_id}/close",
            post(close_chapter),
        )
        .route(
            "/api/memoir/projects/{id}/interview/next",
            post(next_question),
        )
        .route("/api/memoir/projects/{id}/transcript", get(transcript))
        .route("/api/memoir/turns/{id}/answer", post(answer))
        .route(
            "/api/memoir/turns/{id}/recording",
            post(upload_recording).layer(DefaultBodyLimit::max(MAX_RECORDING)),
        )
        .route("/api/memoir/recordings/{id}/audio", get(recording_audio))
        .route("/api/memoir/recordings/{id}/retry", post(retry_recording))
        .route("/api/memoir/speech", get(speech_status))
        .route("/api/memoir/tts", get(tts))
        .route("/api/memoir/projects/{id}/chapters", get(list_chapters))
        .route(
            "/api/memoir/projects/{id}/chapters/{chapter_id}",
            get(get_chapter).put(edit_chapter),
        )
        .route(
            "/api/memoir/projects/{id}/chapters/{chapter_id}/draft",
            post(draft_chapter),
        )
        .route(
            "/api/memoir/projects/{id}/chapters/{chapter_id}/approve",
            post(approve_chapter),
        )
        .route("/api/memoir/projects/{id}/book.epub", get(book_epub))
        .route("/api/memoir/projects/{id}/book.pdf", get(book_pdf))
        .route("/api/memoir/projects/{id}/book.md", get(book_markdown))
        .route("/listen/{token}/{chapter_id}", get(listen_page))
        .route("/listen/{token}/audio/{recording_id}", get(listen_audio))
}

// ---- Projects and plans ----

async fn list_projects(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
) -> Result<Json<Value>, ApiError> {
    let projects = state
        .app()?
        .store
        .memoir_projects(&s.user.id)
        .await
        .map_err(api_error)?;
    let list: Result<Vec<Value>, ApiError> = projects.iter().map(project_json).collect();
    Ok(Json(Value::Array(list?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    teller_name: String,
    language: Language,
    title: Option<String>,
}

async fn create_project(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let new: NewProject = body(&bytes)?;
    let plan = MemoirPlan::default_for(new.teller_name.trim(), new.language);
    let title = new
        .title
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| new.teller_name.clone());
    let project = state
        .app()?
        .store
        .create_memoir_project(
            &s.user.id,
            &title,
            &new.teller_name,
            new.language.tag(),
            &plan.to_json(),
        )
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(project_json(&project)?)).into_response())
}

async fn get_project(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let project = state
        .app()?
        .store
        .memoir_project(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(Json(project_json(&project)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectChange {
    title: Option<String>,
    teller_name: Option<String>,
    language: Option<Language>,
}

async fn update_project(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let change: ProjectChange = body(&bytes)?;
    let store = &state.app()?.store;
    let mut project = store
        .memoir_project(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    let mut plan = plan_of(&project)?;
    if let Some(title) = change.title {
        project.title = title;
    }
    if let Some(teller) = change.teller_name {
        project.teller_name = teller.trim().to_string();
        plan.teller_name = project.teller_name.clone();
    }
    if let Some(language) = change.language {
        project.language = language.tag().to_string();
        plan.language = language;
    }
    project.plan = plan.to_json();
    let saved = store
        .update_memoir_project(&s.user.id, &project)
        .await
        .map_err(api_error)?;
    Ok(Json(project_json(&saved)?))
}

async fn delete_project(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app()?
        .store
        .delete_memoir_project(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    chapters: Vec<ChapterBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChapterBody {
    id: Option<String>,
    title: String,
    #[serde(default)]
    questions: Vec<QuestionBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionBody {
    id: Option<String>,
    text: String,
}

/// An id a client may give: short, and safe in a URL path.
fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    let fine = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fine {
        Ok(())
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            &format!("{what} id {id:?} must be 1-64 letters, digits, '-' or '_'"),
        ))
    }
}

/// `prefix1`, `prefix2`, … the first not in `taken` (which it joins).
fn fresh_id(prefix: &str, taken: &mut HashSet<String>) -> String {
    let id = (1..)
        .map(|n| format!("{prefix}{n}"))
        .find(|id| !taken.contains(id))
        .expect("an unbounded range has a free id");
    taken.insert(id.clone());
    id
}

fn given_id(id: &Option<String>) -> Option<&str> {
    id.as_deref().map(str::trim).filter(|id| !id.is_empty())
}

async fn set_plan(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new: PlanBody = body(&bytes)?;
    let store = &state.app()?.store;
    let mut project = store
        .memoir_project(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    let old = plan_of(&project)?;
    let turns = store
        .memoir_turns(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    // Ids ever used (in the plan or the transcript) are never given to something new, so an old
    // transcript cannot attach itself to a new chapter.
    let mut chapter_ids: HashSet<String> = old
        .chapters
        .iter()
        .map(|c| c.id.clone())
        .chain(turns.iter().map(|t| t.chapter_id.clone()))
        .collect();
    for chapter in &new.chapters {
        if let Some(id) = given_id(&chapter.id) {
            check_id("chapter", id)?;
            chapter_ids.insert(id.to_string());
        }
    }
    let mut chapters = Vec::new();
    for chapter in new.chapters {
        let chapter_id = match given_id(&chapter.id) {
            Some(id) => id.to_string(),
            None => fresh_id("chapter-", &mut chapter_ids),
        };
        let mut question_ids: HashSet<String> = old
            .chapters
            .iter()
            .filter(|c| c.id == chapter_id)
            .flat_map(|c| c.questions.iter().map(|q| q.id.clone()))
            .chain(
                turns
                    .iter()
                    .filter(|t| t.chapter_id == chapter_id)
                    .filter_map(|t| t.question_id.clone()),
            )
            .collect();
        for question in &chapter.questions {
            if let Some(id) = given_id(&question.id) {
                check_id("question", id)?;
                question_ids.insert(id.to_string());
            }
        }
        let questions = chapter
            .questions
            .into_iter()
            .map(|question| PlanQuestion {
                id: match given_id(&question.id) {
                    Some(id) => id.to_string(),
                    None => fresh_id("q", &mut question_ids),
                },
                text: question.text.trim().to_string(),
            })
            .collect();
        chapters.push(PlanChapter {
            id: chapter_id,
            title: chapter.title.trim().to_string(),
            questions,
        });
    }
    let plan = MemoirPlan {
        teller_name: old.teller_name,
        language: old.language,
        chapters,
    };
    plan.validate().map_err(memoir_error)?;
    if plan.chapters.len() > 200 || plan.chapters.iter().any(|c| c.questions.len() > 200) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            "a plan has at most 200 chapters of at most 200 questions",
        ));
    }
    project.plan = plan.to_json();
    let saved = store
        .update_memoir_project(&s.user.id, &project)
        .await
        .map_err(api_error)?;
    Ok(Json(project_json(&saved)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flag {
    closed: bool,
}

async fn close_chapter(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path((id, chapter_id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let flag: Flag = body(&bytes)?;
    let store = &state.app()?.store;
    let mut project = store
        .memoir_project(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    plan_of(&project)?
        .chapter(&chapter_id)
        .map_err(|_| api_error(AppError::NotFound("chapter")))?;
    project.closed_chapters.retain(|c| *c != chapter_id);
    if flag.closed {
        project.closed_chapters.push(chapter_id);
    }
    let saved = store
        .update_memoir_project(&s.user.id, &project)
        .await
        .map_err(api_error)?;
    Ok(Json(project_json(&saved)?))
}

// ---- The interview ----

/// True when a turn's answer is in a recording still waiting for (or failing) transcription.
fn answer_pending(turn: &MemoirTurn, recordings: &[MemoirRecording]) -> bool {
    turn.answer.is_empty()
        && recordings.iter().any(|r| {
            r.turn_id == turn.id
                && matches!(r.status, RecordingStatus::Pending | RecordingStatus::Failed)
        })
}

/// The stored turns as the interviewer policy's transcripts, chapter by chapter. An answer still
/// being transcribed counts as given, and ends its topic (there is nothing to follow up yet).
fn transcripts(
    project: &MemoirProject,
    turns: &[MemoirTurn],
    recordings: &[MemoirRecording],
) -> Vec<ChapterTranscript> {
    let mut transcripts: Vec<ChapterTranscript> = Vec::new();
    for turn in turns {
        let pending = answer_pending(turn, recordings);
        let interview_turn = InterviewTurn {
            kind: match (&turn.kind[..], &turn.question_id) {
                ("starter", Some(question_id)) => TurnKind::Starter {
                    question_id: question_id.clone(),
                },
                _ => TurnKind::FollowUp,
            },
            question: turn.question.clone(),
            answer: if pending {
                PENDING_ANSWER.to_string()
            } else {
                turn.answer.clone()
            },
            topic_exhausted: turn.topic_exhausted || pending,
        };
        match transcripts
            .iter_mut()
            .find(|t| t.chapter_id == turn.chapter_id)
        {
            Some(transcript) => transcript.turns.push(interview_turn),
            None => transcripts.push(ChapterTranscript {
                chapter_id: turn.chapter_id.clone(),
                turns: vec![interview_turn],
                closed: false,
            }),
        }
    }
    for chapter_id in &project.closed_chapters {
        match transcripts.iter_mut().find(|t| t.chapter_id == *chapter_id) {
            Some(transcript) => transcript.closed = true,
            None => transcripts.push(ChapterTranscript {
                chapter_id: chapter_id.clone(),
                turns: Vec::new(),
                closed: true,
            }),
        }
    }
    transcripts
}

/// The question the teller should answer now: the last one asked while it has no answer, else
/// the next one the policy picks (asking the model for follow-ups and whether a topic is done).
/// None when the interview is finished.
async fn advance(
    state: &AppState,
    store: &Store,
    user: &str,
    project: &MemoirProject,
) -> Result<Option<MemoirTurn>, ApiError> {
    let plan = plan_of(project)?;
    let policy = InterviewPolicy::default();
    for _ in 0..ADVANCE_ROUNDS {
        let turns = store
            .memoir_turns(user, &project.id)
            .await
            .map_err(api_error)?;
        let recordings = store
            .memoir_recordings(user, &project.id)
            .await
            .map_err(api_error)?;
        if let Some(last) = turns.last() {
            if last.answer.is_empty() && !answer_pending(last, &recordings) {
                return Ok(Some(last.clone()));
            }
        }
        let transcripts = transcripts(project, &turns, &recordings);
        let step = next_step(&plan, &transcripts, &policy)
            .map_err(|e| error(StatusCode::CONFLICT, "conflict", &e.to_string()))?;
        let chapter_id = match step {
            InterviewStep::Finished => return Ok(None),
            InterviewStep::AskStarter {
                chapter_id,
                question_id,
                question,
            } => {
                let turn = store
                    .add_memoir_turn(
                        user,
                        &project.id,
                        &chapter_id,
                        "starter",
                        Some(&question_id),
                        &question,
                    )
                    .await
                    .map_err(api_error)?;
                return Ok(Some(turn));
            }
            InterviewStep::RepeatQuestion {
                chapter_id,
                question,
            } => {
                let unanswered = turns
                    .iter()
                    .rev()
                    .find(|t| t.chapter_id == chapter_id && t.answer.is_empty());
                if let Some(turn) = unanswered {
                    return Ok(Some(turn.clone()));
                }
                let turn = store
                    .add_memoir_turn(user, &project.id, &chapter_id, "follow_up", None, &question)
                    .await
                    .map_err(api_error)?;
                return Ok(Some(turn));
            }
            InterviewStep::AskFollowUp { chapter_id } => chapter_id,
        };
        let transcript = transcripts
            .iter()
            .find(|t| t.chapter_id == chapter_id)
            .ok_or_else(|| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "a follow-up without a transcript",
                )
            })?;
        let last = turns
            .iter()
            .rev()
            .find(|t| t.chapter_id == chapter_id)
            .ok_or_else(|| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "a follow-up without a turn",
                )
            })?;
        // Every answer to a starter question gets at least one follow-up (people often begin
        // briefly); after a follow-up the model judges whether the topic has more to give.
        if last.kind == "follow_up" {
            let messages = topic_judgement_messages(&plan, transcript).map_err(memoir_error)?;
            // A model that cannot judge (its context too small, say) lets the interview move on
            // rather than stall the teller.
            let done = match generate(state, &messages, JUDGEMENT_TOKENS).await {
                Ok(reply) => parse_topic_judgement(&reply) == Some(TopicJudgement::Done),
                Err(_) => true,
            };
            if done {
                store
                    .set_memoir_topic_exhausted(user, &last.id, true)
                    .await
                    .map_err(api_error)?;
                continue;
            }
        }
        let messages = follow_up_messages(&plan, transcript, &policy).map_err(memoir_error)?;
        // A failed generation is an unusable follow-up: the topic ends, the interview goes on.
        let reply = generate(state, &messages, FOLLOW_UP_TOKENS)
            .await
            .unwrap_or_default();
        let asked_before = |question: &str| {
            turns
                .iter()
                .any(|t| t.question.trim().eq_ignore_ascii_case(question.trim()))
        };
        match parse_follow_up(&reply) {
            Ok(question) if !asked_before(&question) => {
                let turn = store
                    .add_memoir_turn(user, &project.id, &chapter_id, "follow_up", None, &question)
                    .await
                    .map_err(api_error)?;
                return Ok(Some(turn));
            }
            // An unusable follow-up ends the topic rather than the interview.
            _ => store
                .set_memoir_topic_exhausted(user, &last.id, true)
                .await
                .map_err(api_error)?,
        }
    }
    Err(model_failed(
        "the model gave no usable follow-up question several times; try again",
    ))
}

/// The model's whole reply to `messages` (at most `max_tokens`), run on the engine like a
/// chat reply.
async fn generate(
    state: &AppState,
    messages: &[ChatMessage],
    max_tokens: usize,
) -> Result<String, ApiError> {
    let prompt = render_prompt(state, messages).await?;
    let context = state.inner.context;
    if prompt.len() + max_tokens.min(64) > context {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            &format!(
                "the prompt has {} tokens and the model's context holds {context}",
                prompt.len()
            ),
        ));
    }
    let options = GenerateOptions {
        max_tokens: max_tokens.min(context - prompt.len()),
        sampling: SamplingParams {
            repetition_penalty: 1.1,
            ..SamplingParams::greedy()
        },
        ..GenerateOptions::default()
    };
    let (events_sender, mut events) = tokio::sync::mpsc::channel(EVENTS_PER_SEQUENCE);
    state
        .inner
        .engine
        .submit(vec![Job {
            prompt,
            options,
            index: 0,
            events: events_sender,
        }])
        .map_err(|e| {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &e.to_string(),
            )
        })?;
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text {
                text: piece,
                finished,
                ..
            } => {
                text.push_str(&piece);
                if finished.is_some() {
                    return Ok(text);
                }
            }
            Event::Failed { message } => return Err(model_failed(&message)),
        }
    }
    Err(model_failed(
        "the engine stopped before the reply was complete",
    ))
}

async fn render_prompt(state: &AppState, messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
    let values: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect();
    let model = state.inner.model.clone();
    tokio::task::spawn_blocking(move || chat_prompt(&model, &values, None))
        .await
        .map_err(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "rendering the prompt failed",
            )
        })?
}

async fn next_question(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.app()?.store.clone();
    let project = store
        .memoir_project(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    let next = advance(&state, &store, &s.user.id, &project).await?;
    let plan = plan_of(&project)?;
    Ok(Json(json!({
        "question": next.as_ref().map(|t| question_json(t, &plan)),
        "finished": next.is_none(),
    })))
}

/// The reply to an answer: the turn, what comes next, and why nothing does when the model failed
/// (the answer is stored either way).
async fn after_answer(
    state: &AppState,
    store: &Store,
    user: &str,
    turn_id: &str,
    extra: Option<(&str, Value)>,
) -> Result<Value, ApiError> {
    let turn = store.memoir_turn(user, turn_id).await.map_err(api_error)?;
    let project = store
        .memoir_project(user, &turn.project_id)
        .await
        .map_err(api_error)?;
    let plan = plan_of(&project)?;
    let next = advance(state, store, user, &project).await;
    let recordings = store
        .memoir_recordings(user, &project.id)
        .await
        .map_err(api_error)?;
    let mut reply = json!({ "turn": turn_json(&turn, &recordings) });
    match next {
        Ok(next) => {
            reply["next"] = next
                .as_ref()
                .map_or(Value::Null, |t| question_json(t, &plan));
            reply["finished"] = json!(next.is_none());
        }
        Err(e) => {
            reply["next"] = Value::Null;
            reply["finished"] = json!(false);
            reply["next_error"] = json!(e.message);
        }
    }
    if let Some((key, value)) = extra {
        reply[key] = value;
    }
    Ok(reply)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedAnswer {
    text: String,
}

async fn answer(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(turn_id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let typed: TypedAnswer = body(&bytes)?;
    let store = state.app()?.store.clone();
    store
        .answer_memoir_turn(&s.user.id, &turn_id, &typed.text, "typed")
        .await
        .map_err(api_error)?;
    Ok(Json(
        after_answer(&state, &store, &s.user.id, &turn_id, None).await?,
    ))
}

async fn upload_recording(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(turn_id): Path<String>,
    headers: HeaderMap,
    audio: Bytes,
) -> Result<Response, ApiError> {
    let app = state.app()?;
    let store = app.store.clone();
    let user = s.user.id.as_str();
    let turn = store.memoir_turn(user, &turn_id).await.map_err(api_error)?;
    if !turn.answer.is_empty() {
        return Err(api_error(AppError::Conflict(
            "this question already has an answer".into(),
        )));
    }
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or("application/octet-stream");
    // Stored before anything can go wrong with the speech models.
    let recording = store
        .add_memoir_recording(user, &turn_id, mime, &audio)
        .await
        .map_err(api_error)?;
    if !app.speech.installed() {
        let e = app.speech.not_installed();
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "speech_unavailable",
            &format!(
                "{e}; the recording is saved and will be transcribed once speech is installed"
            ),
        ));
    }
    let project = store
        .memoir_project(user, &turn.project_id)
        .await
        .map_err(api_error)?;
    let (recording, failure) = transcribe(
        &app.speech,
        &store,
        user,
        &recording.id,
        language_of(&project)?,
    )
    .await?;
    let mut extra = recording_json(&recording);
    if let Some(e) = failure {
        extra["transcription_error"] = json!(e.to_string());
    }
    let reply = after_answer(&state, &store, user, &turn_id, Some(("recording", extra))).await?;
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

async fn transcript(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = &state.app()?.store;
    let user = s.user.id.as_str();
    let project = store.memoir_project(user, &id).await.map_err(api_error)?;
    let plan = plan_of(&project)?;
    let turns = store.memoir_turns(user, &id).await.map_err(api_error)?;
    let recordings = store
        .memoir_recordings(user, &id)
        .await
        .map_err(api_error)?;
    let mut chapters: Vec<(String, String, bool)> = plan
        .chapters
        .iter()
        .map(|c| (c.id.clone(), c.title.clone(), true))
        .collect();
    for turn in &turns {
        if !chapters.iter().any(|(id, _, _)| *id == turn.chapter_id) {
            chapters.push((turn.chapter_id.clone(), turn.chapter_id.clone(), false));
        }
    }
    let chapters: Vec<Value> = chapters
        .into_iter()
        .map(|(chapter_id, title, in_plan)| {
            let own: Vec<Value> = turns
                .iter()
                .filter(|t| t.chapter_id == chapter_id)
                .map(|t| turn_json(t, &recordings))
                .collect();
            json!({
                "chapter_id": chapter_id,
                "title": title,
                "closed": project.closed_chapters.contains(&chapter_id),
                "in_plan": in_plan,
                "turns": own,
            })
        })
        .collect();
    Ok(Json(json!({ "chapters": chapters })))
}

fn audio_response(mime: String, audio: Vec<u8>) -> Response {
    let content_type = HeaderValue::from_str(&mime)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let mut response = audio.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

async fn recording_audio(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (mime, audio) = state
        .app()?
        .store
        .memoir_recording_audio(&s.user.id, &id)
        .await
        .map_err(api_error)?;
    Ok(audio_response(mime, audio))
}

async fn retry_recording(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let app = state.app()?;
    let user = s.user.id.as_str();
    let recording = app
        .store
        .memoir_recording(user, &id)
        .await
        .map_err(api_error)?;
    if !app.speech.installed() {
        return Err(speech_unavailable(&app.speech.not_installed()));
    }
    let project = app
        .store
        .memoir_project(user, &recording.project_id)
        .await
        .map_err(api_error)?;
    let (recording, _) =
        transcribe(&app.speech, &app.store, user, &id, language_of(&project)?).await?;
    Ok(Json(recording_json(&recording)))
}

// ---- Speech ----

async fn speech_status(
    State(state): State<AppState>,
    _: SignedIn,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "installed": state.app()?.speech.installed() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakQuery {
    text: String,
    language: Option<String>,
    slow: Option<String>,
}

async fn tts(
    State(state): State<AppState>,
    _: SignedIn,
    Query(query): Query<SpeakQuery>,
) -> Result<Response, ApiError> {
    let app = state.app()?;
    let language: Language = match query.language.as_deref() {
        None | Some("") => Language::English,
        Some(tag) => serde_json::from_value(json!(tag)).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_input",
                &format!("'language': {tag:?} is not en or zh-Hans"),
            )
        })?,
    };
    let slow = matches!(query.slow.as_deref(), Some("1" | "true" | "yes"));
    if query.text.trim().is_empty() || query.text.chars().count() > MAX_TTS_CHARS {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            &format!("'text' must have 1 to {MAX_TTS_CHARS} characters"),
        ));
    }
    let code = speech_language(language);
    let wav = app
        .speech
        .run(move |service| service.synthesize(&query.text, code, slow))
        .await
        .map_err(speech_error)?;
    Ok(audio_response("audio/wav".into(), wav))
}

// ---- Chapters ----

/// A chapter's stored draft: the paragraphs and who wrote them.
#[derive(Serialize, Deserialize, Default)]
struct StoredChapter {
    /// `model`, or `transcript` when the model's draft had no usable paragraph and the chapter
    /// was made of the teller's answers as they are.
    drafted_by: String,
    paragraphs: Vec<BookParagraph>,
}

fn stored_chapter(draft: &MemoirChapterDraft) -> Result<StoredChapter, ApiError> {
    serde_json::from_str(&draft.paragraphs).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("a stored chapter draft is not valid: {e}"),
        )
    })
}

fn encode(stored: &StoredChapter) -> String {
    serde_json::to_string(stored).expect("paragraphs of plain strings always serialize")
}

/// Every segment of the project's transcript, in order, with the turn it belongs to.
fn segments(turns: &[MemoirTurn]) -> Vec<(Segment, &MemoirTurn)> {
    let mut all = Vec::new();
    for turn in turns {
        all.push((
            Segment {
                id: question_segment(turn),
                speaker: Speaker::Interviewer,
                text: turn.question.clone(),
            },
            turn,
        ));
        if !turn.answer.trim().is_empty() {
            all.push((
                Segment {
                    id: answer_segment(turn),
                    speaker: Speaker::Teller,
                    text: turn.answer.clone(),
                },
                turn,
            ));
        }
    }
    all
}

/// Everything the chapter views need from the store.
struct ProjectData {
    project: MemoirProject,
    plan: MemoirPlan,
    turns: Vec<MemoirTurn>,
    recordings: Vec<MemoirRecording>,
    drafts: Vec<MemoirChapterDraft>,
}

async fn project_data(store: &Store, user: &str, id: &str) -> Result<ProjectData, ApiError> {
    let project = store.memoir_project(user, id).await.map_err(api_error)?;
    let plan = plan_of(&project)?;
    Ok(ProjectData {
        turns: store.memoir_turns(user, id).await.map_err(api_error)?,
        recordings: store.memoir_recordings(user, id).await.map_err(api_error)?,
        drafts: store
            .memoir_chapter_drafts(user, id)
            .await
            .map_err(api_error)?,
        project,
        plan,
    })
}

impl ProjectData {
    fn chapter(&self, chapter_id: &str) -> Result<&PlanChapter, ApiError> {
        self.plan
            .chapter(chapter_id)
            .map_err(|_| api_error(AppError::NotFound("chapter")))
    }

    fn draft(&self, chapter_id: &str) -> Option<&MemoirChapterDraft> {
        self.drafts.iter().find(|d| d.chapter_id == chapter_id)
    }

    fn chapter_json(&self, chapter: &PlanChapter) -> Result<Value, ApiError> {
        let draft = self.draft(&chapter.id);
        let stored = draft.map(stored_chapter).transpose()?.unwrap_or_default();
        let all = segments(&self.turns);
        let plain: Vec<Segment> = all.iter().map(|(s, _)| s.clone()).collect();
        let as_draft: Vec<DraftParagraph> = stored
            .paragraphs
            .iter()
            .map(|p| DraftParagraph {
                text: p.text.clone(),
                sources: p.sources.clone(),
            })
            .collect();
        let checks = check_draft(&as_draft, &plain);
        let paragraphs: Vec<Value> = stored
            .paragraphs
            .iter()
            .zip(&checks)
            .map(|(paragraph, check)| {
                let verdict = if paragraph.edited_by_family {
                    json!("edited")
                } else {
                    json!(check.verdict)
                };
                json!({
                    "text": paragraph.text,
                    "sources": paragraph.sources,
                    "edited_by_family": paragraph.edited_by_family,
                    "verdict": verdict,
                    "unsupported": check.unsupported,
                })
            })
            .collect();
        let cited: BTreeSet<u32> = stored
            .paragraphs
            .iter()
            .flat_map(|p| p.sources.iter().copied())
            .collect();
        let cited_segments: Vec<Value> = all
            .iter()
            .filter(|(segment, _)| cited.contains(&segment.id))
            .map(|(segment, turn)| {
                let recordings: Vec<Value> = match segment.speaker {
                    Speaker::Teller => self
                        .recordings
                        .iter()
                        .filter(|r| r.turn_id == turn.id)
                        .map(recording_json)
                        .collect(),
                    Speaker::Interviewer => Vec::new(),
                };
                json!({
                    "id": segment.id,
                    "speaker": segment.speaker,
                    "text": segment.text,
                    "turn_id": turn.id,
                    "recordings": recordings,
                })
            })
            .collect();
        Ok(json!({
            "chapter_id": chapter.id,
            "title": chapter.title,
            "approved": draft.is_some_and(|d| d.approved),
            "drafted_at": draft.map(|d| d.drafted_at),
            "updated_at": draft.map(|d| d.updated_at),
            "drafted_by": draft.map(|_| stored.drafted_by.clone()),
            "paragraphs": paragraphs,
            "segments": cited_segments,
        }))
    }
}

async fn list_chapters(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let data = project_data(&state.app()?.store, &s.user.id, &id).await?;
    let chapters: Result<Vec<Value>, ApiError> = data
        .plan
        .chapters
        .iter()
        .map(|c| data.chapter_json(c))
        .collect();
    Ok(Json(Value::Array(chapters?)))
}

async fn get_chapter(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path((id, chapter_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let data = project_data(&state.app()?.store, &s.user.id, &id).await?;
    Ok(Json(data.chapter_json(data.chapter(&chapter_id)?)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DraftRequest {
    keep_edits: Option<bool>,
}

async fn draft_chapter(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path((id, chapter_id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: DraftRequest = if bytes.is_empty() {
        DraftRequest::default()
    } else {
        body::<Option<DraftRequest>>(&bytes)?.unwrap_or_default()
    };
    let store = state.app()?.store.clone();
    let user = s.user.id.as_str();
    let data = project_data(&store, user, &id).await?;
    let chapter = data.chapter(&chapter_id)?;
    let chapter_turns: Vec<MemoirTurn> = data
        .turns
        .iter()
        .filter(|t| t.chapter_id == chapter_id)
        .cloned()
        .collect();
    let chapter_segments: Vec<Segment> = segments(&chapter_turns)
        .into_iter()
        .map(|(segment, _)| segment)
        .collect();
    let messages = drafting_messages(
        data.plan.language,
        &data.project.teller_name,
        &chapter.title,
        &chapter_segments,
    )
    .map_err(memoir_error)?;
    // A chapter too long for the model's context is made of the answers as they are.
    let reply = match generate(&state, &messages, DRAFT_TOKENS).await {
        Ok(reply) => reply,
        Err(e) if e.status == StatusCode::BAD_REQUEST => String::new(),
        Err(e) => return Err(e),
    };
    let parsed = parse_draft(&reply).unwrap_or_default();
    let checks = check_draft(&parsed, &chapter_segments);
    let usable: Vec<DraftParagraph> = parsed
        .into_iter()
        .zip(&checks)
        .filter(|(_, check)| check.verdict != Verdict::Rejected)
        .map(|(paragraph, _)| paragraph)
        .collect();
    let (drafted_by, redraft) = if usable.is_empty() {
        let verbatim = chapter_segments
            .iter()
            .filter(|segment| segment.speaker == Speaker::Teller)
            .map(|segment| DraftParagraph {
                text: segment.text.clone(),
                sources: vec![segment.id],
            })
            .collect();
        ("transcript", verbatim)
    } else {
        ("model", usable)
    };
    let previous = match data.draft(&chapter_id) {
        Some(draft) => stored_chapter(draft)?.paragraphs,
        None => Vec::new(),
    };
    let mode = if request.keep_edits.unwrap_or(true) {
        MergeMode::KeepFamilyEdits
    } else {
        MergeMode::DiscardFamilyEdits
    };
    let stored = StoredChapter {
        drafted_by: drafted_by.into(),
        paragraphs: merge_redraft(&previous, &redraft, mode),
    };
    store
        .save_memoir_chapter_draft(user, &id, &chapter_id, &encode(&stored), false, true)
        .await
        .map_err(api_error)?;
    let data = project_data(&store, user, &id).await?;
    Ok(Json(data.chapter_json(data.chapter(&chapter_id)?)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChapterEdit {
    paragraphs: Vec<ParagraphEdit>,
    approved: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParagraphEdit {
    text: String,
    #[serde(default)]
    sources: Vec<u32>,
}

async fn edit_chapter(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path((id, chapter_id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let edit: ChapterEdit = body(&bytes)?;
    let store = state.app()?.store.clone();
    let user = s.user.id.as_str();
    let data = project_data(&store, user, &id).await?;
    data.chapter(&chapter_id)?;
    let known: HashSet<u32> = segments(&data.turns).iter().map(|(s, _)| s.id).collect();
    let (previous, approved_before) = match data.draft(&chapter_id) {
        Some(draft) => (stored_chapter(draft)?, draft.approved),
        None => (StoredChapter::default(), false),
    };
    let bad = |message: String| error(StatusCode::BAD_REQUEST, "bad_input", &message);
    let mut paragraphs = Vec::new();
    for (index, paragraph) in edit.paragraphs.into_iter().enumerate() {
        let text = paragraph.text.trim().to_string();
        if text.is_empty() || text.chars().count() > 20_000 {
            return Err(bad(format!(
                "paragraph {} must have 1 to 20000 characters",
                index + 1
            )));
        }
        if let Some(unknown) = paragraph.sources.iter().find(|id| !known.contains(id)) {
            return Err(bad(format!(
                "paragraph {} cites segment {unknown}, which this project's transcript does not have",
                index + 1
            )));
        }
        let unchanged = previous
            .paragraphs
            .iter()
            .find(|p| p.text == text && p.sources == paragraph.sources);
        paragraphs.push(BookParagraph {
            edited_by_family: unchanged.is_none_or(|p| p.edited_by_family),
            text,
            sources: paragraph.sources,
        });
    }
    let stored = StoredChapter {
        drafted_by: if previous.drafted_by.is_empty() {
            "family".into()
        } else {
            previous.drafted_by
        },
        paragraphs,
    };
    store
        .save_memoir_chapter_draft(
            user,
            &id,
            &chapter_id,
            &encode(&stored),
            edit.approved.unwrap_or(approved_before),
            false,
        )
        .await
        .map_err(api_error)?;
    let data = project_data(&store, user, &id).await?;
    Ok(Json(data.chapter_json(data.chapter(&chapter_id)?)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    approved: bool,
}

async fn approve_chapter(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path((id, chapter_id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let approval: Approval = body(&bytes)?;
    let store = state.app()?.store.clone();
    let user = s.user.id.as_str();
    let data = project_data(&store, user, &id).await?;
    data.chapter(&chapter_id)?;
    let draft = data.draft(&chapter_id).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            "this chapter has no draft to approve yet",
        )
    })?;
    store
        .save_memoir_chapter_draft(
            user,
            &id,
            &chapter_id,
            &draft.paragraphs,
            approval.approved,
            false,
        )
        .await
        .map_err(api_error)?;
    let data = project_data(&store, user, &id).await?;
    Ok(Json(data.chapter_json(data.chapter(&chapter_id)?)?))
}

// ---- The book ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BookQuery {
    approved_only: Option<String>,
}

/// `scheme://host` of the request, for links printed in the book.
fn base_url(headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty() && !h.contains(|c: char| c.is_whitespace() || c == '/'))
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_input",
                "the request has no usable Host header for the book's links",
            )
        })?;
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    Ok(format!("{}://{host}", if https { "https" } else { "http" }))
}

async fn book_of(
    state: &AppState,
    user: &str,
    id: &str,
    headers: &HeaderMap,
    query: &BookQuery,
) -> Result<(Book, String), ApiError> {
    let data = project_data(&state.app()?.store, user, id).await?;
    let approved_only = matches!(query.approved_only.as_deref(), Some("1" | "true" | "yes"));
    let base = base_url(headers)?;
    let mut chapters = Vec::new();
    for chapter in &data.plan.chapters {
        let Some(draft) = data.draft(&chapter.id) else {
            continue;
        };
        let stored = stored_chapter(draft)?;
        if stored.paragraphs.is_empty() || (approved_only && !draft.approved) {
            continue;
        }
        chapters.push(BookChapter {
            title: chapter.title.clone(),
            paragraphs: stored.paragraphs.into_iter().map(|p| p.text).collect(),
            photos: Vec::new(),
            recordings_url: Some(format!(
                "{base}/listen/{}/{}",
                data.project.share_token, chapter.id
            )),
        });
    }
    if chapters.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            if approved_only {
                "no chapter is approved yet"
            } else {
                "no chapter is drafted yet"
            },
        ));
    }
    let book = Book {
        title: data.project.title.clone(),
        subtitle: None,
        author: data.project.teller_name.clone(),
        dedication: None,
        language: data.plan.language,
        identifier: Some(format!("urn:uuid:{}", data.project.id)),
        chapters,
    };
    let file_stem: String = data
        .project
        .title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let file_stem = file_stem.trim_matches('-').to_string();
    Ok((
        book,
        if file_stem.is_empty() {
            "memoir".into()
        } else {
            file_stem
        },
    ))
}

fn download(bytes: Vec<u8>, content_type: &'static str, file_name: String) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

async fn render<F>(book: Book, render: F) -> Result<Vec<u8>, ApiError>
where
    F: FnOnce(&Book) -> Result<Vec<u8>, MemoirError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || render(&book))
        .await
        .map_err(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "rendering the book failed",
            )
        })?
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            )
        })
}

async fn book_epub(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<BookQuery>,
) -> Result<Response, ApiError> {
    let (book, stem) = book_of(&state, &s.user.id, &id, &headers, &query).await?;
    let epub = render(book, |book| render_epub(book, chrono::Utc::now())).await?;
    Ok(download(
        epub,
        "application/epub+zip",
        format!("{stem}.epub"),
    ))
}

async fn book_pdf(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<BookQuery>,
) -> Result<Response, ApiError> {
    let (book, stem) = book_of(&state, &s.user.id, &id, &headers, &query).await?;
    let pdf = render(book, |book| render_pdf(book, &BookFont::from_system()?)).await?;
    Ok(download(pdf, "application/pdf", format!("{stem}.pdf")))
}

async fn book_markdown(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<BookQuery>,
) -> Result<Response, ApiError> {
    let (book, stem) = book_of(&state, &s.user.id, &id, &headers, &query).await?;
    let markdown = render(book, |book| {
        Ok(render_markdown(book)?.markdown.into_bytes())
    })
    .await?;
    Ok(download(
        markdown,
        "text/markdown; charset=utf-8",
        format!("{stem}.md"),
    ))
}

// ---- The public recordings pages ----

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn listen_page(
    State(state): State<AppState>,
    Path((token, chapter_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = &state.app()?.store;
    let project = store
        .memoir_project_by_share_token(&token)
        .await
        .map_err(api_error)?;
    let owner = project.owner_id.clone();
    let data = project_data(store, &owner, &project.id).await?;
    let chapter = data.chapter(&chapter_id)?;
    let mut items = String::new();
    for turn in data.turns.iter().filter(|t| t.chapter_id == chapter_id) {
        let recordings: Vec<&MemoirRecording> = data
            .recordings
            .iter()
            .filter(|r| r.turn_id == turn.id)
            .collect();
        if recordings.is_empty() {
            continue;
        }
        items.push_str(&format!(
            "<section><h2>{}</h2>\n",
            escape_html(&turn.question)
        ));
        for recording in recordings {
            items.push_str(&format!(
                "<audio controls preload=\"none\" src=\"/listen/{}/audio/{}\"></audio>\n",
                escape_html(&token),
                escape_html(&recording.id)
            ));
            if let Some(text) = recording.transcript.as_deref().filter(|t| !t.is_empty()) {
                items.push_str(&format!("<p>{}</p>\n", escape_html(text)));
            }
        }
        items.push_str("</section>\n");
    }
    if items.is_empty() {
        items = "<p>—</p>".into();
    }
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} — {book}</title>\
         <style>body{{font:1.2rem/1.5 serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}\
         audio{{width:100%}}h2{{font-size:1.2rem}}</style></head>\
         <body><h1>{title}</h1><p>{teller}</p>\n{items}</body></html>\n",
        lang = data.plan.language.tag(),
        title = escape_html(&chapter.title),
        book = escape_html(&data.project.title),
        teller = escape_html(&data.project.teller_name),
    );
    Ok(Html(page).into_response())
}

async fn listen_audio(
    State(state): State<AppState>,
    Path((token, recording_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = &state.app()?.store;
    let project = store
        .memoir_project_by_share_token(&token)
        .await
        .map_err(api_error)?;
    let recording = store
        .memoir_recording(&project.owner_id, &recording_id)
        .await
        .map_err(api_error)?;
    if recording.project_id != project.id {
        return Err(api_error(AppError::NotFound("recording")));
    }
    let (mime, audio) = store
        .memoir_recording_audio(&project.owner_id, &recording_id)
        .await
        .map_err(api_error)?;
    Ok(audio_response(mime, audio))
}
