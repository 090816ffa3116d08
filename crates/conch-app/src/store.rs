//! Opening the database and bringing its schema up to date.
//!
//! sqlx's `Any` driver runs the same SQL on SQLite and PostgreSQL: parameters are written `$1`
//! (both accept it), types are limited to what both share (TEXT, BIGINT; booleans as 0/1 and
//! images as base64 text, because SQLite's BOOLEAN and PostgreSQL's BYTEA have no common type
//! in `Any`), and there is one list of migrations.

use crate::{AppError, Result};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The schema, one entry per version, applied in order at open and never edited once released.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_admin BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE characters (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    personality TEXT NOT NULL,
    scenario TEXT NOT NULL,
    greeting TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    example_dialogue TEXT NOT NULL,
    tags TEXT NOT NULL,
    extensions TEXT NOT NULL,
    card_extra TEXT NOT NULL,
    published BIGINT NOT NULL,
    avatar TEXT,
    avatar_type TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX characters_owner ON characters(owner_id);
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    character_id TEXT,
    model TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX conversations_owner ON conversations(owner_id, updated_at);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    parent_id TEXT,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    chosen BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX messages_conversation ON messages(conversation_id);
CREATE INDEX messages_status ON messages(status);
CREATE TABLE feedback (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    rating BIGINT NOT NULL,
    reasons TEXT NOT NULL,
    comment TEXT,
    snapshot TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, owner_id)
);
CREATE TABLE preferences (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id TEXT,
    source TEXT NOT NULL,
    prompt TEXT NOT NULL,
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    chosen_message_id TEXT NOT NULL,
    rejected_message_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX preferences_parent ON preferences(owner_id, parent_id, source)
"#,
    r#"
CREATE TABLE memoir_projects (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    teller_name TEXT NOT NULL,
    language TEXT NOT NULL,
    plan TEXT NOT NULL,
    closed_chapters TEXT NOT NULL,
    share_token TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX memoir_projects_owner ON memoir_projects(owner_id, updated_at);
CREATE TABLE memoir_turns (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES memoir_projects(id) ON DELETE CASCADE,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    chapter_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    question_id TEXT,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    answer_source TEXT,
    topic_exhausted BIGINT NOT NULL,
    asked_at BIGINT NOT NULL,
    answered_at BIGINT,
    UNIQUE (project_id, seq)
);
CREATE TABLE memoir_recordings (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES memoir_projects(id) ON DELETE CASCADE,
    turn_id TEXT NOT NULL REFERENCES memoir_turns(id) ON DELETE CASCADE,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    mime TEXT NOT NULL,
    size BIGINT NOT NULL,
    audio TEXT NOT NULL,
    status TEXT NOT NULL,
    transcript TEXT,
    attempts BIGINT NOT NULL,
    last_error TEXT,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX memoir_recordings_turn ON memoir_recordings(turn_id);
CREATE INDEX memoir_recordings_due ON memoir_recordings(status, next_attempt_at);
CREATE TABLE memoir_chapters (
    project_id TEXT NOT NULL REFERENCES memoir_projects(id) ON DELETE CASCADE,
    chapter_id TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    paragraphs TEXT NOT NULL,
    approved BIGINT NOT NULL,
    drafted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, chapter_id)
)
"#,
];

/// The app's database: a pool of connections to SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    postgres: bool,
}

/// `$XDG_DATA_HOME/conch`, else `~/.local/share/conch`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("conch"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/conch"))
}

impl Store {
    /// Opens (creating it if missing) `conch.db` in `dir`, a SQLite database in WAL mode.
    pub async fn open_data_dir(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            AppError::Internal(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })?;
        let file = dir.join("conch.db");
        let path = file.to_str().ok_or_else(|| {
            AppError::BadInput(format!(
                "the data directory path {} is not valid UTF-8",
                dir.display()
            ))
        })?;
        // The URL's path is percent-decoded, so the characters that mean something in a URL are escaped.
        let escaped: String = path
            .chars()
            .map(|c| match c {
                '%' | '?' | '#' => format!("%{:02X}", c as u32),
                c => c.to_string(),
            })
            .collect();
        Store::open(&format!("sqlite://{escaped}?mode=rwc")).await
    }

    /// Opens `sqlite://PATH?mode=rwc` or `postgres://USER@HOST/DB` and applies any missing migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !postgres && !url.starts_with("sqlite:") {
            return Err(AppError::BadInput(format!(
                "unsupported database URL '{}': expected sqlite:… or postgres://…",
                redact(url)
            )));
        }
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| AppError::BadInput(format!("bad database URL '{}': {e}", redact(url))))?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres { 8 } else { 4 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if !postgres {
                        // Foreign keys are per connection in SQLite; waiting on a writer beats failing.
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                AppError::Internal(format!("cannot open the database '{}': {e}", redact(url)))
            })?;
        let store = Store { pool, postgres };
        if !postgres {
            // WAL lets readers go on while a reply is being written; it is a property of the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&store.pool)
                .await?;
        }
        store.migrate().await?;
        Ok(store)
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            // Two servers (or tests) opening one empty database at once must not both migrate it.
            sqlx::query("SELECT pg_advisory_xact_lock(7263656)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await?;
        let applied = applied.unwrap_or(0);
        if applied > MIGRATIONS.len() as i64 {
            return Err(AppError::Internal(format!(
                "the database has schema version {applied}, newer than this Conch knows ({}); use a newer Conch",
                MIGRATIONS.len()
            )));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            for statement in migration
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(i as i64 + 1)
                .bind(crate::now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Closes the pool (waiting for connections in use to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_hide_the_password() {
        assert_eq!(
            redact("postgres://me:s3cret@db.home:5432/conch"),
            "postgres://me:***@db.home:5432/conch"
        );
        assert_eq!(redact("postgres://me@db/conch"), "postgres://me@db/conch");
        assert_eq!(redact("sqlite:///data/conch.db"), "sqlite:///data/conch.db");
    }

    #[tokio::test]
    async fn unknown_schemes_and_unreachable_servers_are_errors() {
        let e = Store::open("mysql://me:pw@localhost/conch")
            .await
            .err()
            .unwrap();
        assert!(matches!(e, AppError::BadInput(_)), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = Store::open("sqlite:///nonexistent-dir-for-conch/x/conch.db?mode=ro")
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot open the database"), "{e}");
    }
}
