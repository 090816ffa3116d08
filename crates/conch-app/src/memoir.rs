//! Memoir storage: projects (one per teller, with the family's plan as JSON), the interview's
//! turns (a question and its answer), the teller's recordings (kept as they came, before any
//! transcription) and the chapter drafts. Plans, interviewing and drafting themselves are
//! `conch-memoir`'s; this module only stores, always scoped to the owner.
//!
//! Every turn gets a number (`seq`) unique in its project and never reused, so the transcript
//! segment ids drafts cite (derived from it) stay valid however the plan changes.

use crate::{check_len, new_id, now_ms, random_bytes, AppError, Result, Store};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// Largest recording accepted (bytes of audio).
pub const MAX_RECORDING: usize = 50 << 20;

/// How long a new recording is left to its uploader's own transcription before background
/// retries may take it (longer than the speech service's transcription time limit).
pub const FIRST_RETRY_AFTER_MS: i64 = 16 * 60 * 1000;
const MAX_ANSWER: usize = 100_000;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoirProject {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub teller_name: String,
    /// BCP 47 tag (`en`, `zh-Hans`).
    pub language: String,
    /// The plan as `conch_memoir::plan::MemoirPlan` JSON.
    pub plan: String,
    /// Chapter ids the family closed (the interview skips them).
    pub closed_chapters: Vec<String>,
    /// The secret in the public recordings pages' URLs.
    pub share_token: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A question asked in the interview and the answer it got (empty while unanswered).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoirTurn {
    pub id: String,
    pub project_id: String,
    pub chapter_id: String,
    /// Numbers the turns of a project from 1, in the order they were asked.
    pub seq: i64,
    /// `starter` or `follow_up`.
    pub kind: String,
    pub question_id: Option<String>,
    pub question: String,
    pub answer: String,
    /// `typed` or `voice` once answered.
    pub answer_source: Option<String>,
    pub topic_exhausted: bool,
    pub asked_at: i64,
    pub answered_at: Option<i64>,
}

/// A recording's transcription state.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// Not transcribed yet (or a transient failure): the retry task will try again.
    Pending,
    Transcribed,
    /// The audio cannot be transcribed (undecodable); kept, and retried only on request.
    Failed,
}

impl RecordingStatus {
    fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Pending => "pending",
            RecordingStatus::Transcribed => "transcribed",
            RecordingStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(RecordingStatus::Pending),
            "transcribed" => Ok(RecordingStatus::Transcribed),
            "failed" => Ok(RecordingStatus::Failed),
            other => Err(AppError::Internal(format!(
                "stored recording status {other:?} is unknown"
            ))),
        }
    }
}

/// A recording's details, without its audio.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoirRecording {
    pub id: String,
    pub project_id: String,
    pub turn_id: String,
    pub mime: String,
    pub bytes: i64,
    pub status: RecordingStatus,
    pub transcript: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When the retry task may try again (milliseconds since the epoch).
    #[serde(skip)]
    pub next_attempt_at: i64,
    pub created_at: i64,
}

/// A chapter's draft: the paragraphs as `conch_memoir::draft::BookParagraph` JSON.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoirChapterDraft {
    pub project_id: String,
    pub chapter_id: String,
    pub paragraphs: String,
    pub approved: bool,
    pub drafted_at: i64,
    pub updated_at: i64,
}

const PROJECT_COLUMNS: &str =
    "id, owner_id, title, teller_name, language, plan, closed_chapters, share_token, created_at, updated_at";
const TURN_COLUMNS: &str = "id, project_id, chapter_id, seq, kind, question_id, question, answer, answer_source, topic_exhausted, asked_at, answered_at";
const RECORDING_COLUMNS: &str = "id, project_id, turn_id, mime, size, status, transcript, attempts, last_error, next_attempt_at, created_at";
const DRAFT_COLUMNS: &str = "project_id, chapter_id, paragraphs, approved, drafted_at, updated_at";

fn project_from_row(row: &AnyRow) -> Result<MemoirProject> {
    let closed: String = row.try_get("closed_chapters")?;
    Ok(MemoirProject {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        title: row.try_get("title")?,
        teller_name: row.try_get("teller_name")?,
        language: row.try_get("language")?,
        plan: row.try_get("plan")?,
        closed_chapters: serde_json::from_str(&closed).map_err(|e| {
            AppError::Internal(format!("stored closed chapters are not valid: {e}"))
        })?,
        share_token: row.try_get("share_token")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn turn_from_row(row: &AnyRow) -> Result<MemoirTurn> {
    Ok(MemoirTurn {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        chapter_id: row.try_get("chapter_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        question_id: row.try_get("question_id")?,
        question: row.try_get("question")?,
        answer: row.try_get("answer")?,
        answer_source: row.try_get("answer_source")?,
        topic_exhausted: row.try_get::<i64, _>("topic_exhausted")? != 0,
        asked_at: row.try_get("asked_at")?,
        answered_at: row.try_get("answered_at")?,
    })
}

fn recording_from_row(row: &AnyRow) -> Result<MemoirRecording> {
    Ok(MemoirRecording {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        turn_id: row.try_get("turn_id")?,
        mime: row.try_get("mime")?,
        bytes: row.try_get("size")?,
        status: RecordingStatus::parse(&row.try_get::<String, _>("status")?)?,
        transcript: row.try_get("transcript")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
    })
}

fn draft_from_row(row: &AnyRow) -> Result<MemoirChapterDraft> {
    Ok(MemoirChapterDraft {
        project_id: row.try_get("project_id")?,
        chapter_id: row.try_get("chapter_id")?,
        paragraphs: row.try_get("paragraphs")?,
        approved: row.try_get::<i64, _>("approved")? != 0,
        drafted_at: row.try_get("drafted_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn check_project_fields(title: &str, teller_name: &str) -> Result<()> {
    if teller_name.trim().is_empty() {
        return Err(AppError::BadInput("teller_name is empty".into()));
    }
    check_len("teller_name", teller_name, 100)?;
    if title.trim().is_empty() {
        return Err(AppError::BadInput("title is empty".into()));
    }
    check_len("title", title, 200)
}

impl Store {
    /// A new project with `plan` (JSON) in `language`.
    pub async fn create_memoir_project(
        &self,
        user: &str,
        title: &str,
        teller_name: &str,
        language: &str,
        plan: &str,
    ) -> Result<MemoirProject> {
        check_project_fields(title, teller_name)?;
        let now = now_ms();
        let project = MemoirProject {
            id: new_id()?,
            owner_id: user.to_string(),
            title: title.trim().to_string(),
            teller_name: teller_name.trim().to_string(),
            language: language.to_string(),
            plan: plan.to_string(),
            closed_chapters: Vec::new(),
            share_token: URL_SAFE_NO_PAD.encode(random_bytes::<24>()?),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(&format!(
            "INSERT INTO memoir_projects ({PROJECT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&project.id)
        .bind(user)
        .bind(&project.title)
        .bind(&project.teller_name)
        .bind(&project.language)
        .bind(&project.plan)
        .bind("[]")
        .bind(&project.share_token)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(project)
    }

    /// The user's projects, most recently changed first.
    pub async fn memoir_projects(&self, user: &str) -> Result<Vec<MemoirProject>> {
        let rows = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM memoir_projects WHERE owner_id = $1 ORDER BY updated_at DESC, id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(project_from_row).collect()
    }

    pub async fn memoir_project(&self, user: &str, id: &str) -> Result<MemoirProject> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM memoir_projects WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(AppError::NotFound("memoir project"))?;
        project_from_row(&row)
    }

    /// The project whose recordings pages `share_token` opens (no sign-in: the token is the key).
    pub async fn memoir_project_by_share_token(&self, share_token: &str) -> Result<MemoirProject> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM memoir_projects WHERE share_token = $1"
        ))
        .bind(share_token)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(AppError::NotFound("memoir project"))?;
        project_from_row(&row)
    }

    /// Saves the changeable fields of `project` (title, teller, language, plan, closed chapters).
    pub async fn update_memoir_project(
        &self,
        user: &str,
        project: &MemoirProject,
    ) -> Result<MemoirProject> {
        check_project_fields(&project.title, &project.teller_name)?;
        let closed = serde_json::to_string(&project.closed_chapters)
            .map_err(|e| AppError::Internal(format!("encoding closed chapters: {e}")))?;
        let done = sqlx::query(
            "UPDATE memoir_projects SET title = $1, teller_name = $2, language = $3, plan = $4,
             closed_chapters = $5, updated_at = $6 WHERE id = $7 AND owner_id = $8",
        )
        .bind(project.title.trim())
        .bind(project.teller_name.trim())
        .bind(&project.language)
        .bind(&project.plan)
        .bind(closed)
        .bind(now_ms())
        .bind(&project.id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(AppError::NotFound("memoir project"));
        }
        self.memoir_project(user, &project.id).await
    }

    /// Deletes a project with its turns, recordings and drafts.
    pub async fn delete_memoir_project(&self, user: &str, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM memoir_projects WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(user)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(AppError::NotFound("memoir project"));
        }
        Ok(())
    }

    async fn touch_memoir_project(&self, project_id: &str) -> Result<()> {
        sqlx::query("UPDATE memoir_projects SET updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(project_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The project's turns in the order they were asked.
    pub async fn memoir_turns(&self, user: &str, project_id: &str) -> Result<Vec<MemoirTurn>> {
        self.memoir_project(user, project_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {TURN_COLUMNS} FROM memoir_turns WHERE project_id = $1 AND owner_id = $2 ORDER BY seq"
        ))
        .bind(project_id)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(turn_from_row).collect()
    }

    pub async fn memoir_turn(&self, user: &str, id: &str) -> Result<MemoirTurn> {
        let row = sqlx::query(&format!(
            "SELECT {TURN_COLUMNS} FROM memoir_turns WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(AppError::NotFound("interview question"))?;
        turn_from_row(&row)
    }

    /// Records a question as asked (`kind` is `starter` or `follow_up`).
    pub async fn add_memoir_turn(
        &self,
        user: &str,
        project_id: &str,
        chapter_id: &str,
        kind: &str,
        question_id: Option<&str>,
        question: &str,
    ) -> Result<MemoirTurn> {
        if !matches!(kind, "starter" | "follow_up") {
            return Err(AppError::BadInput(format!(
                "a question's kind is starter or follow_up, not {kind:?}"
            )));
        }
        check_len("question", question, 5_000)?;
        self.memoir_project(user, project_id).await?;
        let id = new_id()?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM memoir_turns WHERE project_id = $1")
                .bind(project_id)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(&format!(
            "INSERT INTO memoir_turns ({TURN_COLUMNS}, owner_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, '', NULL, 0, $8, NULL, $9)"
        ))
        .bind(&id)
        .bind(project_id)
        .bind(chapter_id)
        .bind(last.unwrap_or(0) + 1)
        .bind(kind)
        .bind(question_id)
        .bind(question.trim())
        .bind(now)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.touch_memoir_project(project_id).await?;
        self.memoir_turn(user, &id).await
    }

    /// Stores the answer of an unanswered turn (`source` is `typed` or `voice`); a turn that
    /// already has one answers [`AppError::Conflict`].
    pub async fn answer_memoir_turn(
        &self,
        user: &str,
        turn_id: &str,
        answer: &str,
        source: &str,
    ) -> Result<MemoirTurn> {
        if answer.trim().is_empty() {
            return Err(AppError::BadInput("the answer is empty".into()));
        }
        check_len("answer", answer, MAX_ANSWER)?;
        let turn = self.memoir_turn(user, turn_id).await?;
        let done = sqlx::query(
            "UPDATE memoir_turns SET answer = $1, answer_source = $2, answered_at = $3
             WHERE id = $4 AND owner_id = $5 AND answer = ''",
        )
        .bind(answer.trim())
        .bind(source)
        .bind(now_ms())
        .bind(turn_id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(AppError::Conflict(
                "this question already has an answer".into(),
            ));
        }
        self.touch_memoir_project(&turn.project_id).await?;
        self.memoir_turn(user, turn_id).await
    }

    /// Marks whether the topic was judged exhausted after this turn's answer.
    pub async fn set_memoir_topic_exhausted(
        &self,
        user: &str,
        turn_id: &str,
        exhausted: bool,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE memoir_turns SET topic_exhausted = $1 WHERE id = $2 AND owner_id = $3",
        )
        .bind(i64::from(exhausted))
        .bind(turn_id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(AppError::NotFound("interview question"));
        }
        Ok(())
    }

    /// Stores a recording of the answer to `turn_id`, status pending, before anything else
    /// happens to it. Background retries leave it alone for [`FIRST_RETRY_AFTER_MS`].
    pub async fn add_memoir_recording(
        &self,
        user: &str,
        turn_id: &str,
        mime: &str,
        audio: &[u8],
    ) -> Result<MemoirRecording> {
        if audio.is_empty() {
            return Err(AppError::BadInput("the recording is empty".into()));
        }
        if audio.len() > MAX_RECORDING {
            return Err(AppError::BadInput(format!(
                "the recording has {} bytes; at most {MAX_RECORDING} are allowed",
                audio.len()
            )));
        }
        check_len("the recording's content type", mime, 200)?;
        let turn = self.memoir_turn(user, turn_id).await?;
        let id = new_id()?;
        let now = now_ms();
        // The uploader transcribes it right away; background retries wait until that attempt
        // has surely ended (or the server died during it).
        let first_retry = now + FIRST_RETRY_AFTER_MS;
        sqlx::query(&format!(
            "INSERT INTO memoir_recordings ({RECORDING_COLUMNS}, owner_id, audio)
             VALUES ($1, $2, $3, $4, $5, 'pending', NULL, 0, NULL, $6, $7, $8, $9)"
        ))
        .bind(&id)
        .bind(&turn.project_id)
        .bind(turn_id)
        .bind(mime)
        .bind(audio.len() as i64)
        .bind(first_retry)
        .bind(now)
        .bind(user)
        .bind(STANDARD.encode(audio))
        .execute(&self.pool)
        .await?;
        self.memoir_recording(user, &id).await
    }

    pub async fn memoir_recording(&self, user: &str, id: &str) -> Result<MemoirRecording> {
        let row = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM memoir_recordings WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(AppError::NotFound("recording"))?;
        recording_from_row(&row)
    }

    /// The project's recordings, oldest first.
    pub async fn memoir_recordings(
        &self,
        user: &str,
        project_id: &str,
    ) -> Result<Vec<MemoirRecording>> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM memoir_recordings WHERE project_id = $1 AND owner_id = $2
             ORDER BY created_at, id"
        ))
        .bind(project_id)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// The recording's content type and audio.
    pub async fn memoir_recording_audio(&self, user: &str, id: &str) -> Result<(String, Vec<u8>)> {
        let row = sqlx::query(
            "SELECT mime, audio FROM memoir_recordings WHERE id = $1 AND owner_id = $2",
        )
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(AppError::NotFound("recording"))?;
        let audio: String = row.try_get("audio")?;
        let audio = STANDARD.decode(audio).map_err(|e| {
            AppError::Internal(format!("a stored recording is not valid base64: {e}"))
        })?;
        Ok((row.try_get("mime")?, audio))
    }

    /// Pending recordings whose next attempt is due, oldest first: `(owner id, recording id)`.
    pub async fn due_memoir_recordings(&self, limit: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT owner_id, id FROM memoir_recordings WHERE status = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("owner_id")?, row.try_get("id")?)))
            .collect()
    }

    /// Records a finished transcription; the transcript becomes the turn's answer when the turn
    /// has none yet. Returns the recording.
    pub async fn memoir_transcribed(
        &self,
        user: &str,
        recording_id: &str,
        transcript: &str,
    ) -> Result<MemoirRecording> {
        let recording = self.memoir_recording(user, recording_id).await?;
        sqlx::query(
            "UPDATE memoir_recordings SET status = 'transcribed', transcript = $1, attempts = attempts + 1,
             last_error = NULL WHERE id = $2 AND owner_id = $3",
        )
        .bind(transcript.trim())
        .bind(recording_id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        if !transcript.trim().is_empty() {
            sqlx::query(
                "UPDATE memoir_turns SET answer = $1, answer_source = 'voice', answered_at = $2
                 WHERE id = $3 AND owner_id = $4 AND answer = ''",
            )
            .bind(transcript.trim())
            .bind(now_ms())
            .bind(&recording.turn_id)
            .bind(user)
            .execute(&self.pool)
            .await?;
        }
        self.touch_memoir_project(&recording.project_id).await?;
        self.memoir_recording(user, recording_id).await
    }

    /// Records a failed transcription attempt: `retry_at` (ms since the epoch) keeps the
    /// recording pending for the retry task; `None` marks it failed (retried only on request).
    pub async fn memoir_transcription_failed(
        &self,
        user: &str,
        recording_id: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<MemoirRecording> {
        let status = match retry_at {
            Some(_) => RecordingStatus::Pending,
            None => RecordingStatus::Failed,
        };
        let done = sqlx::query(
            "UPDATE memoir_recordings SET status = $1, attempts = attempts + 1, last_error = $2,
             next_attempt_at = $3 WHERE id = $4 AND owner_id = $5",
        )
        .bind(status.as_str())
        .bind(error.chars().take(2_000).collect::<String>())
        .bind(retry_at.unwrap_or(i64::MAX))
        .bind(recording_id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(AppError::NotFound("recording"));
        }
        self.memoir_recording(user, recording_id).await
    }

    /// The project's chapter drafts.
    pub async fn memoir_chapter_drafts(
        &self,
        user: &str,
        project_id: &str,
    ) -> Result<Vec<MemoirChapterDraft>> {
        let rows = sqlx::query(&format!(
            "SELECT {DRAFT_COLUMNS} FROM memoir_chapters WHERE project_id = $1 AND owner_id = $2"
        ))
        .bind(project_id)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(draft_from_row).collect()
    }

    /// Saves a chapter's paragraphs (JSON). `drafted` marks a new model draft (its time is
    /// recorded); `approved` is stored as given.
    pub async fn save_memoir_chapter_draft(
        &self,
        user: &str,
        project_id: &str,
        chapter_id: &str,
        paragraphs: &str,
        approved: bool,
        drafted: bool,
    ) -> Result<MemoirChapterDraft> {
        check_len("the chapter", paragraphs, 1_000_000)?;
        self.memoir_project(user, project_id).await?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE memoir_chapters SET paragraphs = $1, approved = $2, updated_at = $3,
             drafted_at = CASE WHEN $4 = 1 THEN $3 ELSE drafted_at END
             WHERE project_id = $5 AND chapter_id = $6 AND owner_id = $7",
        )
        .bind(paragraphs)
        .bind(i64::from(approved))
        .bind(now)
        .bind(i64::from(drafted))
        .bind(project_id)
        .bind(chapter_id)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(&format!(
                "INSERT INTO memoir_chapters ({DRAFT_COLUMNS}, owner_id) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .bind(project_id)
            .bind(chapter_id)
            .bind(paragraphs)
            .bind(i64::from(approved))
            .bind(now)
            .bind(now)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.touch_memoir_project(project_id).await?;
        self.memoir_chapter_drafts(user, project_id)
            .await?
            .into_iter()
            .find(|draft| draft.chapter_id == chapter_id)
            .ok_or_else(|| AppError::Internal("a saved chapter draft vanished".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::databases;

    async fn owner_and_other(store: &Store) -> (String, String) {
        let admin = store
            .create_first_admin("teller-admin", "correct horse", None)
            .await
            .unwrap();
        let other = store
            .create_user(&admin.id, "cousin", "battery staple", None, false)
            .await
            .unwrap();
        (admin.id, other.id)
    }

    fn not_found<T: std::fmt::Debug>(r: Result<T>) {
        assert!(matches!(r, Err(AppError::NotFound(_))), "{r:?}");
    }

    #[tokio::test]
    async fn memoir_data_round_trips_and_stays_with_its_owner() {
        for db in databases().await {
            let store = Store::open(&db.url).await.unwrap();
            let (owner, other) = owner_and_other(&store).await;
            let project = store
                .create_memoir_project(&owner, "Grandma's Story", "Grandma Li", "zh-Hans", "{}")
                .await
                .unwrap();
            assert_eq!(
                store.memoir_projects(&owner).await.unwrap(),
                vec![project.clone()]
            );
            assert!(store.memoir_projects(&other).await.unwrap().is_empty());
            not_found(store.memoir_project(&other, &project.id).await);

            let first = store
                .add_memoir_turn(
                    &owner,
                    &project.id,
                    "childhood",
                    "starter",
                    Some("q1"),
                    "你在哪里出生？",
                )
                .await
                .unwrap();
            let second = store
                .add_memoir_turn(
                    &owner,
                    &project.id,
                    "childhood",
                    "follow_up",
                    None,
                    "后来呢？",
                )
                .await
                .unwrap();
            assert_eq!((first.seq, second.seq), (1, 2));
            not_found(store.memoir_turn(&other, &first.id).await);
            not_found(
                store
                    .add_memoir_turn(&other, &project.id, "childhood", "starter", None, "x")
                    .await,
            );
            let answered = store
                .answer_memoir_turn(&owner, &first.id, "在上海。", "typed")
                .await
                .unwrap();
            assert_eq!(answered.answer, "在上海。");
            assert!(matches!(
                store
                    .answer_memoir_turn(&owner, &first.id, "again", "typed")
                    .await,
                Err(AppError::Conflict(_))
            ));

            // Audio bytes come back exactly, including bytes that are not UTF-8.
            let audio: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
            let recording = store
                .add_memoir_recording(&owner, &second.id, "audio/webm", &audio)
                .await
                .unwrap();
            assert_eq!(recording.status, RecordingStatus::Pending);
            not_found(store.memoir_recording_audio(&other, &recording.id).await);
            let (mime, back) = store
                .memoir_recording_audio(&owner, &recording.id)
                .await
                .unwrap();
            assert_eq!((mime.as_str(), back), ("audio/webm", audio));
            // Its uploader is transcribing it: not yet the retry task's.
            assert!(store.due_memoir_recordings(10).await.unwrap().is_empty());
            store
                .memoir_transcription_failed(&owner, &recording.id, "busy", Some(now_ms() - 1))
                .await
                .unwrap();
            let due = store.due_memoir_recordings(10).await.unwrap();
            assert_eq!(due, vec![(owner.clone(), recording.id.clone())]);

            let failed = store
                .memoir_transcription_failed(
                    &owner,
                    &recording.id,
                    "worker died",
                    Some(now_ms() + 60_000),
                )
                .await
                .unwrap();
            assert_eq!(
                (failed.status, failed.attempts),
                (RecordingStatus::Pending, 2)
            );
            assert!(store.due_memoir_recordings(10).await.unwrap().is_empty());
            let done = store
                .memoir_transcribed(&owner, &recording.id, " 我们坐船去了香港。 ")
                .await
                .unwrap();
            assert_eq!(done.status, RecordingStatus::Transcribed);
            let turn = store.memoir_turn(&owner, &second.id).await.unwrap();
            assert_eq!(turn.answer, "我们坐船去了香港。");
            assert_eq!(turn.answer_source.as_deref(), Some("voice"));

            let draft = store
                .save_memoir_chapter_draft(&owner, &project.id, "childhood", "[]", false, true)
                .await
                .unwrap();
            let edited = store
                .save_memoir_chapter_draft(&owner, &project.id, "childhood", "[1]", true, false)
                .await
                .unwrap();
            assert_eq!(edited.drafted_at, draft.drafted_at);
            assert!(edited.approved);
            not_found(
                store
                    .save_memoir_chapter_draft(&other, &project.id, "childhood", "[]", false, true)
                    .await,
            );
            assert!(store
                .memoir_chapter_drafts(&other, &project.id)
                .await
                .unwrap()
                .is_empty());

            let found = store
                .memoir_project_by_share_token(&project.share_token)
                .await
                .unwrap();
            assert_eq!(found.id, project.id);
            not_found(store.delete_memoir_project(&other, &project.id).await);
            store
                .delete_memoir_project(&owner, &project.id)
                .await
                .unwrap();
            not_found(store.memoir_recording(&owner, &recording.id).await);
            not_found(store.memoir_turn(&owner, &first.id).await);
        }
    }
}
