//! The family app's web assets (`crates/conch-server/web/`), compiled into the binary so that
//! `conch serve` needs no files and fetches nothing at run time. `GET /` answers the page and
//! `GET /assets/{path}` the scripts, styles and icons it loads.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles only from this
//! origin, no inline script, no plugins, no framing), so text a model writes can never run as
//! code even if it reached the page as markup.

use crate::ApiError;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: its path under `web/`, its media type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Everything under `web/`; the tests check that no file there is missing from this list.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/icons.js", JS),
    asset!("js/markdown.js", JS),
    asset!("js/tree.js", JS),
    asset!("js/settings.js", JS),
    asset!("js/auth.js", JS),
    asset!("js/chat.js", JS),
    asset!("js/characters.js", JS),
    asset!("js/admin.js", JS),
    asset!("js/memoir.js", JS),
    asset!("js/memoir-shared.js", JS),
    asset!("js/memoir-interview.js", JS),
    asset!("js/memoir-chapters.js", JS),
];

/// Scripts, styles, images, sound and connections only from this origin; nothing inline, no
/// plugins, no framing by other sites. `blob:` images are the avatar preview before upload;
/// `blob:` media is a memoir question's speech, fetched before it plays.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; connect-src 'self'; \
    font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The routes `GET /` and `GET /assets/{*path}`, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/assets/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                serve(&path, &headers)
            }),
        )
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::not_found(&format!("/assets/{path}")).into_response();
    };
    let etag = format!("\"{:016x}\"", fnv1a(asset.body));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        // The names carry no content hash, so the browser must ask again each time; the ETag
        // keeps that to a 304 while the binary is unchanged.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).expect("a quoted hex string is a valid header value"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    if fresh {
        (status, headers).into_response()
    } else {
        (status, headers, asset.body).into_response()
    }
}

/// FNV-1a, 64-bit: enough to tell one build's file from another's for the ETag.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn web_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
    }

    fn files_under(dir: &std::path::Path, prefix: &str, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                files_under(&entry.path(), &format!("{name}/"), out);
            } else {
                out.insert(name);
            }
        }
    }

    #[test]
    fn every_file_under_web_is_embedded() {
        let mut on_disk = BTreeSet::new();
        files_under(&web_dir(), "", &mut on_disk);
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        assert_eq!(on_disk, embedded);
    }

    /// The quoted targets of `from '...'`, `import('...')`, `src="..."` and `href="..."`.
    fn references(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for marker in ["from '", "import('", "src=\"", "href=\""] {
            let quote = marker.chars().last().unwrap();
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                if let Some(end) = rest.find(quote) {
                    found.push(rest[..end].to_string());
                }
            }
        }
        found
    }

    #[test]
    fn every_local_reference_resolves_to_an_embedded_asset() {
        let known: BTreeSet<&str> = ASSETS.iter().map(|a| a.path).collect();
        let mut checked = 0;
        for asset in ASSETS {
            let Ok(text) = std::str::from_utf8(asset.body) else {
                continue;
            };
            let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
            for target in references(text) {
                let resolved = if let Some(abs) = target.strip_prefix("/assets/") {
                    abs.to_string()
                } else if let Some(rel) = target.strip_prefix("./") {
                    if dir.is_empty() {
                        rel.to_string()
                    } else {
                        format!("{dir}/{rel}")
                    }
                } else {
                    continue;
                };
                assert!(
                    known.contains(resolved.as_str()),
                    "{} refers to {target}, which is not embedded",
                    asset.path
                );
                checked += 1;
            }
        }
        assert!(checked > 5, "only {checked} references found");
    }

    #[test]
    fn the_page_has_no_inline_script_or_handlers() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap().to_lowercase();
        for (at, _) in page.match_indices("<script") {
            let tag_end = page[at..].find('>').unwrap() + at;
            assert!(
                page[at..tag_end].contains(" src="),
                "inline script in index.html"
            );
        }
        assert!(!page.contains(" onload=") && !page.contains(" onclick="));
        assert!(!page.contains("style="), "inline style in index.html");
    }

    async fn start() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes::<()>()).await });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn serves_the_page_and_assets_with_types_and_security_headers() {
        let base = start().await;
        let client = reqwest::Client::new();
        for (path, type_prefix) in [
            ("/", "text/html"),
            ("/assets/app.css", "text/css"),
            ("/assets/js/main.js", "text/javascript"),
            ("/assets/icon.svg", "image/svg+xml"),
        ] {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let headers = response.headers().clone();
            let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
            assert!(get("content-type").starts_with(type_prefix), "{path}");
            assert_eq!(get("cache-control"), "no-cache");
            assert_eq!(get("x-content-type-options"), "nosniff");
            let csp = get("content-security-policy");
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"));
            assert!(!response.bytes().await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn answers_304_for_a_current_etag_and_200_for_a_stale_one() {
        let base = start().await;
        let client = reqwest::Client::new();
        let url = format!("{base}/assets/app.css");
        let first = client.get(&url).send().await.unwrap();
        let etag = first.headers()["etag"].to_str().unwrap().to_string();
        let again = client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = client
            .get(&url)
            .header("if-none-match", "\"0000000000000000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200);
    }

    #[tokio::test]
    async fn unknown_and_escaping_paths_are_404() {
        let base = start().await;
        let client = reqwest::Client::new();
        for path in [
            "/assets/nope.js",
            "/assets/../Cargo.toml",
            "/assets/%2e%2e/Cargo.toml",
            "/assets/js/../../src/web.rs",
            "/assets/",
        ] {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 404, "{path}");
        }
    }
}
