//! Accounts of one household and their sessions. The first account is the admin, who adds the
//! others. Passwords are kept as Argon2id hashes; session tokens are random 256-bit values of
//! which only a SHA-256 hash is stored, so a copy of the database opens no session.

use crate::{check_len, new_id, now_ms, random_bytes, AppError, Result, Store};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

/// How long a session lasts.
pub const SESSION_DAYS: i64 = 30;
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
    pub created_at: i64,
}

/// A signed-in session: `token` goes in the cookie (only its hash is stored) and `csrf_token`
/// must come back in a header with every state-changing request.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub csrf_token: String,
    pub user: User,
}

const USER_COLUMNS: &str = "id, username, display_name, is_admin, created_at";

fn user_from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn check_username(username: &str) -> Result<()> {
    let valid = !username.is_empty()
        && username.chars().count() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(AppError::BadInput(
            "a username is 1 to 64 letters, digits, '.', '_' or '-'".into(),
        ))
    }
}

fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(AppError::BadInput(format!(
            "the password must be at least {MIN_PASSWORD} characters"
        )));
    }
    if password.len() > MAX_PASSWORD {
        return Err(AppError::BadInput(format!(
            "the password must be at most {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

/// Argon2id with the crate's default (OWASP-recommended) cost, off the async runtime.
async fn hash_password(password: &str) -> Result<String> {
    let password = password.to_string();
    let salt_bytes = random_bytes::<16>()?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|e| AppError::Internal(format!("password salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AppError::Internal(format!("hashing the password failed: {e}")))
    })
    .await
    .map_err(|e| AppError::Internal(format!("hashing the password failed: {e}")))?
}

async fn password_matches(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A valid hash of a password nobody has, so that an unknown username costs as much time as a
/// wrong password and timing does not tell which usernames exist.
async fn decoy_hash() -> &'static str {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY
        .get_or_init(|| async {
            hash_password("decoy password never used")
                .await
                .unwrap_or_default()
        })
        .await
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_token() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

impl Store {
    /// True while no account exists (the first signup becomes the admin).
    pub async fn needs_admin(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n == 0)
    }

    /// Creates the first account, an admin. Forbidden once any account exists.
    pub async fn create_first_admin(
        &self,
        username: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<User> {
        if !self.needs_admin().await? {
            return Err(AppError::Forbidden(
                "this household already has an admin; ask them to add your account".into(),
            ));
        }
        self.insert_user(username, password, display_name, true)
            .await
    }

    /// An admin adds an account.
    pub async fn create_user(
        &self,
        acting: &str,
        username: &str,
        password: &str,
        display_name: Option<&str>,
        is_admin: bool,
    ) -> Result<User> {
        self.require_admin(acting).await?;
        self.insert_user(username, password, display_name, is_admin)
            .await
    }

    async fn insert_user(
        &self,
        username: &str,
        password: &str,
        display_name: Option<&str>,
        is_admin: bool,
    ) -> Result<User> {
        check_username(username)?;
        check_password(password)?;
        let display_name = display_name
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .unwrap_or(username);
        check_len("display_name", display_name, 100)?;
        let hash = hash_password(password).await?;
        let user = User {
            id: new_id()?,
            username: username.to_string(),
            display_name: display_name.to_string(),
            is_admin,
            created_at: now_ms(),
        };
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, display_name, password_hash, is_admin, created_at)
             SELECT $1, $2, $3, $4, $5, $6
             WHERE NOT EXISTS (SELECT 1 FROM users WHERE LOWER(username) = LOWER($2))",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(&hash)
        .bind(is_admin as i64)
        .bind(user.created_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(r) if r.rows_affected() == 1 => Ok(user),
            Ok(_) => Err(AppError::Conflict(format!(
                "the username '{username}' is taken"
            ))),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(AppError::Conflict(
                format!("the username '{username}' is taken"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The user, if `id` exists.
    pub async fn user(&self, id: &str) -> Result<User> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(AppError::NotFound("user"))?;
        user_from_row(&row)
    }

    /// Forbidden unless `acting` is an admin.
    pub async fn require_admin(&self, acting: &str) -> Result<User> {
        let user = self.user(acting).await?;
        if !user.is_admin {
            return Err(AppError::Forbidden("only an admin may do this".into()));
        }
        Ok(user)
    }

    /// Every account (admin only), oldest first.
    pub async fn list_users(&self, acting: &str) -> Result<Vec<User>> {
        self.require_admin(acting).await?;
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, username"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Removes an account and everything it owns (admin only; not oneself).
    pub async fn delete_user(&self, acting: &str, id: &str) -> Result<()> {
        self.require_admin(acting).await?;
        if acting == id {
            return Err(AppError::BadInput(
                "you cannot delete your own account".into(),
            ));
        }
        self.user(id).await?;
        let mut tx = self.pool.begin().await?;
        // Explicit, child tables first, so nothing depends on the backend's cascade settings.
        for table in [
            "feedback",
            "preferences",
            "messages",
            "conversations",
            "characters",
            "sessions",
        ] {
            let column = if table == "sessions" {
                "user_id"
            } else {
                "owner_id"
            };
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user with this username and password, or [`AppError::BadCredentials`].
    pub async fn verify_password(&self, username: &str, password: &str) -> Result<User> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let hash: String = row.try_get("password_hash")?;
                if password.len() <= MAX_PASSWORD && password_matches(password, &hash).await {
                    user_from_row(&row)
                } else {
                    Err(AppError::BadCredentials)
                }
            }
            None => {
                password_matches(password, decoy_hash().await).await;
                Err(AppError::BadCredentials)
            }
        }
    }

    /// Starts a session for `user_id`.
    pub async fn create_session(&self, user_id: &str) -> Result<Session> {
        let user = self.user(user_id).await?;
        let token = new_token()?;
        let csrf_token = new_token()?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(&token))
        .bind(user_id)
        .bind(&csrf_token)
        .bind(now)
        .bind(now + SESSION_DAYS * 24 * 3600 * 1000)
        .execute(&self.pool)
        .await?;
        Ok(Session {
            token,
            csrf_token,
            user,
        })
    }

    /// The live session with this cookie token, if any (expired ones are removed).
    pub async fn session(&self, token: &str) -> Result<Option<Session>> {
        let hash = token_hash(token);
        let row = sqlx::query(
            "SELECT u.id, u.username, u.display_name, u.is_admin, u.created_at, s.csrf_token, s.expires_at
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: i64 = row.try_get("expires_at")?;
        if expires_at <= now_ms() {
            self.delete_session(token).await?;
            return Ok(None);
        }
        Ok(Some(Session {
            token: token.to_string(),
            csrf_token: row.try_get("csrf_token")?,
            user: user_from_row(&row)?,
        }))
    }

    /// Ends the session with this cookie token.
    pub async fn delete_session(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
