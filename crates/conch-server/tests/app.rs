//! The family app's `/api/*` routes over a real listener, with the tiny random fixture model
//! (fixtures/models/llama_tied) and a throwaway SQLite database (PostgreSQL too for the storage
//! itself: see crates/conch-app/tests). Clients are reqwest with a cookie store, as a browser.

use conch_app::testing::{check_export_record, TestDatabase};
use conch_app::{ExportFormat, Store};
use conch_engine::{load, LoadedModel};
use conch_server::{router, AppState, ServerConfig};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod common;
use common::{parse_events, Client};

fn model() -> Arc<LoadedModel> {
    static MODEL: OnceLock<Arc<LoadedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/models/llama_tied/model.gguf");
            Arc::new(load(&path).expect("fixture model loads"))
        })
        .clone()
}

/// A context well past the fixture's 256 so replies run long enough to be stopped mid-way.
fn config() -> ServerConfig {
    ServerConfig {
        parallel: 2,
        ctx: 4096,
        ..ServerConfig::default()
    }
}

struct Server {
    base: String,
    _db: Option<TestDatabase>,
}

async fn serve_on(url: &str, listener: tokio::net::TcpListener) {
    let store = Store::open(url).await.expect("the store opens");
    let state = AppState::with_store(model(), &config(), store)
        .await
        .expect("valid settings");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .unwrap();
}

async fn start_with(db: TestDatabase) -> Server {
    start_model(db, model()).await
}

async fn start_model(db: TestDatabase, model: Arc<LoadedModel>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let store = Store::open(&db.url).await.expect("the store opens");
    let state = AppState::with_store(model, &config(), store)
        .await
        .expect("valid settings");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    Server {
        base,
        _db: Some(db),
    }
}

async fn start() -> Server {
    start_with(conch_app::testing::sqlite().await).await
}

impl Client {
    fn new(server: &Server) -> Client {
        Client::at(&server.base)
    }
}

/// Checks a finished stream's shape: the created rows, deltas, then `done`; returns the reply.
fn finished_reply(events: &[Value], created: usize) -> Value {
    for e in &events[..created] {
        assert_eq!(e["type"], "message", "{e}");
    }
    let reply = &events[created - 1]["message"];
    assert_eq!(reply["status"], "streaming");
    assert_eq!(reply["content"], "");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "done", "{last}");
    let deltas: String = events[created..events.len() - 1]
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "delta");
            assert_eq!(e["message_id"], reply["id"]);
            e["text"].as_str().unwrap()
        })
        .collect();
    let done = &last["message"];
    assert_eq!(done["id"], reply["id"]);
    assert_eq!(done["content"].as_str().unwrap(), deltas);
    assert_eq!(done["status"], "complete");
    done.clone()
}

/// An admin (alice) and a second person (bob), each signed in on their own client.
async fn household(server: &Server) -> (Client, Client) {
    let mut alice = Client::new(server);
    alice.sign_in("alice", "alice password", true).await;
    let r = alice
        .post(
            "/api/users",
            json!({ "username": "bob", "password": "bob password", "display_name": "Bob" }),
        )
        .await;
    assert_eq!(r.status, 201);
    let mut bob = Client::new(server);
    bob.sign_in("bob", "bob password", false).await;
    (alice, bob)
}

#[tokio::test]
async fn accounts_sessions_and_cookies() {
    let server = start().await;
    let mut alice = Client::new(&server);
    assert_eq!(
        alice.get("/api/setup").await.json(),
        json!({ "needs_admin": true })
    );
    assert_eq!(alice.get("/api/me").await.status, 401);
    let r = alice
        .post(
            "/api/auth/signup",
            json!({ "username": "alice", "password": "alice password", "display_name": "Alice" }),
        )
        .await;
    assert_eq!(r.status, 201);
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    for attribute in [
        "conch_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let body = r.json();
    assert_eq!(body["user"]["is_admin"], true);
    assert_eq!(body["user"]["display_name"], "Alice");
    alice.csrf = Some(body["csrf_token"].as_str().unwrap().into());
    let me = alice.get("/api/me").await.json();
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["csrf_token"], body["csrf_token"]);
    assert_eq!(
        alice.get("/api/setup").await.json(),
        json!({ "needs_admin": false })
    );

    let mut stranger = Client::new(&server);
    let r = stranger
        .post(
            "/api/auth/signup",
            json!({ "username": "eve", "password": "eve password" }),
        )
        .await;
    assert_eq!(r.status, 403);

    let r = alice
        .post(
            "/api/users",
            json!({ "username": "bob", "password": "bob password" }),
        )
        .await;
    assert_eq!(r.status, 201);
    let bob_id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        alice
            .post(
                "/api/users",
                json!({ "username": "Bob", "password": "bob password" })
            )
            .await
            .status,
        409
    );
    assert_eq!(
        alice
            .post(
                "/api/users",
                json!({ "username": "x y", "password": "bob password" })
            )
            .await
            .status,
        400
    );
    assert_eq!(
        alice
            .post(
                "/api/users",
                json!({ "username": "carl", "password": "short" })
            )
            .await
            .status,
        400
    );
    assert_eq!(
        stranger
            .post(
                "/api/auth/login",
                json!({ "username": "bob", "password": "wrong password" })
            )
            .await
            .status,
        401
    );
    stranger.sign_in("bob", "bob password", false).await;
    assert_eq!(stranger.get("/api/users").await.status, 403);
    assert_eq!(
        stranger
            .post(
                "/api/users",
                json!({ "username": "carl", "password": "carl password" })
            )
            .await
            .status,
        403
    );
    let users = alice.get("/api/users").await.json();
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert_eq!(
        alice
            .call(
                Method::DELETE,
                &format!("/api/users/{}", users[0]["id"].as_str().unwrap()),
                None
            )
            .await
            .status,
        400
    );

    let r = stranger.call(Method::POST, "/api/auth/logout", None).await;
    assert_eq!(r.status, 204);
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(stranger.get("/api/me").await.status, 401);

    assert_eq!(
        alice
            .call(Method::DELETE, &format!("/api/users/{bob_id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        stranger
            .post(
                "/api/auth/login",
                json!({ "username": "bob", "password": "bob password" })
            )
            .await
            .status,
        401
    );
    let models = alice.get("/api/models").await.json();
    assert_eq!(models[0]["id"], model().name);
    assert_eq!(models[0]["context_length"], 4096);
}

#[tokio::test]
async fn state_changes_need_the_csrf_token() {
    let server = start().await;
    let (mut alice, _) = household(&server).await;
    let good = alice.csrf.clone();
    for token in [None, Some("wrong".to_string())] {
        alice.csrf = token;
        for (method, path) in [
            (Method::POST, "/api/conversations"),
            (Method::POST, "/api/characters"),
            (Method::POST, "/api/auth/logout"),
            (Method::POST, "/api/users"),
        ] {
            let r = alice.call(method, path, Some(json!({}))).await;
            assert_eq!(r.status, 403, "{path}");
            assert_eq!(r.json()["error"]["code"], "csrf");
        }
    }
    alice.csrf = good;
    assert_eq!(alice.get("/api/conversations").await.json(), json!([]));
    assert_eq!(
        alice.post("/api/conversations", json!({})).await.status,
        201
    );
    // Login from another site's page is refused by its Origin.
    let r = alice
        .send(
            alice
                .http
                .post(format!("{}/api/auth/login", alice.base))
                .header("Origin", "http://evil.example")
                .json(&json!({ "username": "alice", "password": "alice password" })),
        )
        .await;
    assert_eq!(r.status, 403);
    let same_origin = alice.base.clone();
    let r = alice
        .send(
            alice
                .http
                .post(format!("{}/api/auth/login", alice.base))
                .header("Origin", same_origin)
                .json(&json!({ "username": "alice", "password": "alice password" })),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let server = start().await;
    let (_alice, _) = household(&server).await;
    let client = Client::new(&server);
    for _ in 0..5 {
        let r = client
            .post(
                "/api/auth/login",
                json!({ "username": "bob", "password": "guess guess" }),
            )
            .await;
        assert_eq!(r.status, 401);
    }
    // Now even the right password waits.
    let r = client
        .post(
            "/api/auth/login",
            json!({ "username": "bob", "password": "bob password" }),
        )
        .await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=15 * 60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn chat_regenerate_edit_choose_and_feedback() {
    let server = start().await;
    let (alice, bob) = household(&server).await;
    let c = bob
        .post("/api/conversations", json!({ "model": model().name }))
        .await;
    assert_eq!(c.status, 201);
    let c = c.json();
    let id = c["id"].as_str().unwrap();
    assert_eq!(
        bob.post("/api/conversations", json!({ "model": "nope" }))
            .await
            .status,
        404
    );

    let events = bob
        .stream(
            Method::POST,
            &format!("/api/conversations/{id}/messages"),
            Some(json!({ "content": "Tell me about shells" })),
        )
        .await;
    let question = events[0]["message"].clone();
    assert_eq!(
        (question["role"].as_str(), question["content"].as_str()),
        (Some("user"), Some("Tell me about shells"))
    );
    let first = finished_reply(&events, 2);
    assert_eq!(first["parent_id"], question["id"]);
    assert_eq!(first["model"], model().name);

    let events = bob
        .stream(
            Method::POST,
            &format!("/api/messages/{}/regenerate", first["id"].as_str().unwrap()),
            None,
        )
        .await;
    let second = finished_reply(&events, 1);
    assert_eq!(second["parent_id"], question["id"]);

    let whole = bob.get(&format!("/api/conversations/{id}")).await.json();
    assert_eq!(whole["conversation"]["title"], "Tell me about shells");
    let messages = whole["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages
            .iter()
            .map(|m| m["chosen"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, false, true]
    );
    assert_eq!(messages[1]["content"], first["content"]);

    // A follow-up goes under the current branch's end (the newest reply) by default.
    let events = bob
        .stream(
            Method::POST,
            &format!("/api/conversations/{id}/messages"),
            Some(json!({ "content": "More" })),
        )
        .await;
    assert_eq!(events[0]["message"]["parent_id"], second["id"]);
    finished_reply(&events, 2);

    assert_eq!(
        bob.call(
            Method::POST,
            &format!("/api/messages/{}/choose", first["id"].as_str().unwrap()),
            None
        )
        .await
        .status,
        204
    );
    let edited = bob
        .post(
            &format!("/api/messages/{}/edit", first["id"].as_str().unwrap()),
            json!({ "content": "Shells are homes." }),
        )
        .await;
    assert_eq!(edited.status, 200);
    let edited = edited.json();
    assert_eq!(
        (edited["parent_id"].clone(), edited["role"].clone()),
        (question["id"].clone(), json!("assistant"))
    );
    // Editing the question branches and answers the edit.
    let events = bob
        .stream(
            Method::POST,
            &format!("/api/messages/{}/edit", question["id"].as_str().unwrap()),
            Some(json!({ "content": "Tell me about snails" })),
        )
        .await;
    assert_eq!(events[0]["message"]["content"], "Tell me about snails");
    assert_eq!(events[0]["message"]["parent_id"], Value::Null);
    let branch_reply = finished_reply(&events, 2);
    assert_eq!(branch_reply["parent_id"], events[0]["message"]["id"]);
    assert_eq!(
        bob.post(
            &format!(
                "/api/messages/{}/regenerate",
                question["id"].as_str().unwrap()
            ),
            json!({})
        )
        .await
        .status,
        400
    );

    let path = format!("/api/messages/{}/feedback", second["id"].as_str().unwrap());
    let r = bob
        .call(
            Method::PUT,
            &path,
            Some(json!({ "rating": 1, "reasons": ["creative"], "comment": "nice" })),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({ "rating": 1, "reasons": ["creative"], "comment": "nice" })
    );
    assert_eq!(
        bob.call(
            Method::PUT,
            &path,
            Some(json!({ "rating": 1, "reasons": ["lazy"] }))
        )
        .await
        .status,
        400
    );
    let path = format!(
        "/api/messages/{}/feedback",
        branch_reply["id"].as_str().unwrap()
    );
    assert_eq!(
        bob.call(
            Method::PUT,
            &path,
            Some(json!({ "rating": -1, "reasons": ["style"] }))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        bob.call(
            Method::PUT,
            &format!(
                "/api/messages/{}/feedback",
                question["id"].as_str().unwrap()
            ),
            Some(json!({ "rating": 1 }))
        )
        .await
        .status,
        400
    );

    let found = bob.get("/api/conversations?q=SNAILS").await.json();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert!(bob
        .get("/api/conversations?q=nothing-like-this")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());

    assert_eq!(
        bob.get("/api/admin/export?format=trl-kto").await.status,
        403
    );
    for format in ExportFormat::ALL {
        let r = alice
            .get(&format!("/api/admin/export?format={}", format.name()))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        let text = String::from_utf8(r.bytes).unwrap();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(!records.is_empty(), "{}", format.name());
        for record in &records {
            check_export_record(format, record)
                .unwrap_or_else(|e| panic!("{}: {e}: {record}", format.name()));
        }
    }
    assert_eq!(alice.get("/api/admin/export?format=csv").await.status, 400);

    let r = bob
        .call(
            Method::PATCH,
            &format!("/api/conversations/{id}"),
            Some(json!({ "title": "Shells" })),
        )
        .await;
    assert_eq!(r.json()["title"], "Shells");
    assert_eq!(
        bob.call(Method::DELETE, &format!("/api/conversations/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        bob.get(&format!("/api/conversations/{id}")).await.status,
        404
    );
}

#[tokio::test]
async fn characters_gallery_and_cards() {
    let server = start().await;
    let (alice, bob) = household(&server).await;
    let r = alice
        .post("/api/characters", json!({ "name": "Sailor", "greeting": "Ahoy, {{user}}!", "system_prompt": "You are {{char}}.", "tags": ["sea"], "extensions": { "x": 1 } }))
        .await;
    assert_eq!(r.status, 201);
    let sailor = r.json();
    let sid = sailor["id"].as_str().unwrap();
    assert_eq!(sailor["published"], false);
    assert_eq!(
        alice
            .post("/api/characters", json!({ "name": "" }))
            .await
            .status,
        400
    );
    assert_eq!(
        alice
            .post("/api/characters", json!({ "name": "x", "colour": "red" }))
            .await
            .status,
        400
    );

    let png = bob_png();
    let r = alice
        .send(
            alice
                .request(Method::PUT, &format!("/api/characters/{sid}/avatar"))
                .body(png.clone()),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = alice.get(&format!("/api/characters/{sid}/avatar")).await;
    assert_eq!(
        (r.headers["content-type"].to_str().unwrap(), r.bytes.clone()),
        ("image/png", png)
    );
    let r = alice
        .send(
            alice
                .request(Method::PUT, &format!("/api/characters/{sid}/avatar"))
                .body(b"GIF89a".to_vec()),
        )
        .await;
    assert_eq!(r.status, 400);

    assert!(bob
        .get("/api/characters")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    let r = alice
        .post(
            &format!("/api/characters/{sid}/publish"),
            json!({ "published": true }),
        )
        .await;
    assert_eq!(r.json()["published"], true);
    let gallery = bob.get("/api/characters").await.json();
    assert_eq!(gallery[0]["id"], sailor["id"]);
    assert_eq!(
        bob.call(
            Method::PUT,
            &format!("/api/characters/{sid}"),
            Some(json!({ "name": "Mine" }))
        )
        .await
        .status,
        404
    );

    // Bob chats with the published character: its greeting opens, its system prompt leads.
    let c = bob
        .post("/api/conversations", json!({ "character_id": sid }))
        .await
        .json();
    let cid = c["id"].as_str().unwrap();
    let messages = bob.get(&format!("/api/conversations/{cid}")).await.json()["messages"].clone();
    assert_eq!(messages[0]["content"], "Ahoy, Bob!");
    let events = bob
        .stream(
            Method::POST,
            &format!("/api/conversations/{cid}/messages"),
            Some(json!({ "content": "Hi" })),
        )
        .await;
    assert_eq!(events[0]["message"]["parent_id"], messages[0]["id"]);
    finished_reply(&events, 2);

    let copy = bob
        .call(Method::POST, &format!("/api/characters/{sid}/copy"), None)
        .await;
    assert_eq!(copy.status, 201);
    let copy = copy.json();
    assert_eq!(
        (copy["name"].clone(), copy["has_avatar"].clone()),
        (json!("Sailor"), json!(true))
    );
    let cpid = copy["id"].as_str().unwrap();
    let r = bob
        .call(
            Method::PUT,
            &format!("/api/characters/{cpid}"),
            Some(json!({ "name": "Pirate", "extensions": { "x": 2 } })),
        )
        .await;
    assert_eq!(r.json()["name"], "Pirate");
    assert_eq!(
        alice.get(&format!("/api/characters/{sid}")).await.json()["name"],
        "Sailor"
    );

    // Cards: JSON and PNG export, and import of both, keep unknown extensions.
    let card = alice
        .get(&format!("/api/characters/{sid}/card?format=json"))
        .await
        .json();
    assert_eq!(card["spec"], "chara_card_v2");
    assert_eq!(card["data"]["first_mes"], "Ahoy, {{user}}!");
    assert_eq!(card["data"]["extensions"], json!({ "x": 1 }));
    let mut foreign = card.clone();
    foreign["data"]["extensions"]["other_app"] = json!({ "depth": 4 });
    foreign["data"]["creator_notes"] = json!("keep me");
    let r = bob
        .send(
            bob.request(Method::POST, "/api/characters/import")
                .header("content-type", "application/json")
                .body(foreign.to_string()),
        )
        .await;
    assert_eq!(r.status, 201);
    let imported = r.json();
    let iid = imported["id"].as_str().unwrap();
    assert_eq!(
        bob.get(&format!("/api/characters/{iid}/card")).await.json(),
        foreign
    );
    let r = bob
        .get(&format!("/api/characters/{iid}/card?format=png"))
        .await;
    assert_eq!(r.headers["content-type"], "image/png");
    let png_card = r.bytes;
    let r = alice
        .send(
            alice
                .request(Method::POST, "/api/characters/import")
                .header("content-type", "image/png")
                .body(png_card.clone()),
        )
        .await;
    assert_eq!(r.status, 201);
    let from_png = r.json();
    assert_eq!(from_png["has_avatar"], true);
    assert_eq!(
        alice
            .get(&format!(
                "/api/characters/{}/card",
                from_png["id"].as_str().unwrap()
            ))
            .await
            .json(),
        foreign
    );
    assert_eq!(
        alice
            .get(&format!(
                "/api/characters/{}/avatar",
                from_png["id"].as_str().unwrap()
            ))
            .await
            .bytes,
        png_card
    );
    let r = alice
        .send(
            alice
                .request(Method::POST, "/api/characters/import")
                .body(b"\x89PNG\r\n\x1a\nbroken".to_vec()),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        alice
            .get(&format!("/api/characters/{sid}/card?format=gif"))
            .await
            .status,
        400
    );

    assert_eq!(
        alice
            .call(Method::DELETE, &format!("/api/characters/{sid}"), None)
            .await
            .status,
        204
    );
    assert_eq!(bob.get(&format!("/api/characters/{sid}")).await.status, 404);
    // Bob's conversation with it goes on without it.
    let events = bob
        .stream(
            Method::POST,
            &format!("/api/conversations/{cid}/messages"),
            Some(json!({ "content": "Still there?" })),
        )
        .await;
    finished_reply(&events, 2);
}

/// The fixture model with a template that, like Gemma's or Mistral's, raises unless the turns
/// go (system,) user, assistant, user, …
fn strict_model() -> Arc<LoadedModel> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models/llama_tied/model.gguf");
    let mut loaded = load(&path).expect("fixture model loads");
    let source = "{%- if messages[0]['role'] == 'system' %}{%- set turns = messages[1:] %}[SYS]{{ messages[0]['content'] }}[/SYS]\
                  {%- else %}{%- set turns = messages %}{%- endif %}\
                  {%- for m in turns %}{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}\
                  {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}\
                  [{{ m['role'] }}]{{ m['content'] }}{%- endfor %}{%- if add_generation_prompt %}[assistant]{%- endif %}";
    loaded.chat_template = conch_tokenizer::ChatTemplate::new(source, "", "").unwrap();
    Arc::new(loaded)
}

#[tokio::test]
async fn a_greeting_first_still_renders_with_a_strict_template() {
    let strict = strict_model();
    let greeting_first = [
        json!({ "role": "system", "content": "Be brief." }),
        json!({ "role": "assistant", "content": "Hello!" }),
        json!({ "role": "user", "content": "Hi" }),
    ];
    assert!(
        strict.chat_prompt(&greeting_first, None).is_err(),
        "the template must refuse this order"
    );
    let server = start_model(conch_app::testing::sqlite().await, strict).await;
    let (_, bob) = household(&server).await;
    let character = bob
        .post(
            "/api/characters",
            json!({ "name": "Host", "greeting": "Hello!", "system_prompt": "Be brief." }),
        )
        .await
        .json();
    let c = bob
        .post(
            "/api/conversations",
            json!({ "character_id": character["id"] }),
        )
        .await
        .json();
    let events = bob
        .stream(
            Method::POST,
            &format!("/api/conversations/{}/messages", c["id"].as_str().unwrap()),
            Some(json!({ "content": "Hi" })),
        )
        .await;
    finished_reply(&events, 2);
}

/// A small valid PNG (1×1, grey), as Python's zlib and struct wrote it (CRCs by zlib.crc32).
fn bob_png() -> Vec<u8> {
    let hex = "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55\
               0000000a49444154789c636800000082008177cd72b60000000049454e44ae426082";
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn nobody_reaches_another_persons_things() {
    let server = start().await;
    let (alice, bob) = household(&server).await;
    // Alice's things: a private character with an avatar, a conversation with it, replies, a rating.
    let character = alice
        .post(
            "/api/characters",
            json!({ "name": "Private", "greeting": "Hello" }),
        )
        .await
        .json();
    let ch = character["id"].as_str().unwrap().to_string();
    alice
        .send(
            alice
                .request(Method::PUT, &format!("/api/characters/{ch}/avatar"))
                .body(bob_png()),
        )
        .await;
    let c = alice
        .post(
            "/api/conversations",
            json!({ "character_id": ch, "title": "Diary" }),
        )
        .await
        .json();
    let cid = c["id"].as_str().unwrap().to_string();
    let events = alice
        .stream(
            Method::POST,
            &format!("/api/conversations/{cid}/messages"),
            Some(json!({ "content": "my secret" })),
        )
        .await;
    let user_msg = events[0]["message"]["id"].as_str().unwrap().to_string();
    let reply = finished_reply(&events, 2)["id"]
        .as_str()
        .unwrap()
        .to_string();
    alice
        .call(
            Method::PUT,
            &format!("/api/messages/{reply}/feedback"),
            Some(json!({ "rating": 1 })),
        )
        .await;
    let before = alice.get(&format!("/api/conversations/{cid}")).await.bytes;
    let character_before = alice.get(&format!("/api/characters/{ch}")).await.bytes;

    let users = alice.get("/api/users").await.json();
    let alice_id = users[0]["id"].as_str().unwrap().to_string();
    let not_found = [
        (Method::GET, format!("/api/conversations/{cid}"), None),
        (
            Method::PATCH,
            format!("/api/conversations/{cid}"),
            Some(json!({ "title": "mine" })),
        ),
        (Method::DELETE, format!("/api/conversations/{cid}"), None),
        (
            Method::POST,
            format!("/api/conversations/{cid}/messages"),
            Some(json!({ "content": "x" })),
        ),
        (
            Method::POST,
            format!("/api/messages/{reply}/regenerate"),
            None,
        ),
        (
            Method::POST,
            format!("/api/messages/{reply}/edit"),
            Some(json!({ "content": "x" })),
        ),
        (
            Method::POST,
            format!("/api/messages/{user_msg}/edit"),
            Some(json!({ "content": "x" })),
        ),
        (Method::POST, format!("/api/messages/{reply}/choose"), None),
        (
            Method::PUT,
            format!("/api/messages/{reply}/feedback"),
            Some(json!({ "rating": -1 })),
        ),
        (
            Method::DELETE,
            format!("/api/messages/{reply}/feedback"),
            None,
        ),
        (Method::GET, format!("/api/characters/{ch}"), None),
        (
            Method::PUT,
            format!("/api/characters/{ch}"),
            Some(json!({ "name": "mine" })),
        ),
        (Method::DELETE, format!("/api/characters/{ch}"), None),
        (Method::GET, format!("/api/characters/{ch}/avatar"), None),
        (Method::PUT, format!("/api/characters/{ch}/avatar"), None),
        (
            Method::POST,
            format!("/api/characters/{ch}/publish"),
            Some(json!({ "published": true })),
        ),
        (Method::POST, format!("/api/characters/{ch}/copy"), None),
        (Method::GET, format!("/api/characters/{ch}/card"), None),
        (
            Method::GET,
            format!("/api/characters/{ch}/card?format=png"),
            None,
        ),
        (
            Method::POST,
            "/api/conversations".to_string(),
            Some(json!({ "character_id": ch })),
        ),
    ];
    for (method, path, body) in not_found {
        let r = if path.ends_with("/avatar") && method == Method::PUT {
            bob.send(bob.request(method.clone(), &path).body(bob_png()))
                .await
        } else {
            bob.call(method.clone(), &path, body).await
        };
        assert_eq!(
            r.status,
            404,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
    }
    // Bob's own conversation cannot graft onto Alice's messages.
    let own = bob.post("/api/conversations", json!({})).await.json();
    let r = bob
        .post(
            &format!(
                "/api/conversations/{}/messages",
                own["id"].as_str().unwrap()
            ),
            json!({ "content": "x", "parent_id": reply }),
        )
        .await;
    assert_eq!(r.status, 404);
    for (method, path) in [
        (Method::GET, "/api/users".to_string()),
        (Method::DELETE, format!("/api/users/{alice_id}")),
        (
            Method::GET,
            "/api/admin/export?format=openai-sft".to_string(),
        ),
    ] {
        assert_eq!(
            bob.call(method.clone(), &path, None).await.status,
            403,
            "{method} {path}"
        );
    }
    assert!(bob
        .get("/api/conversations")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["id"] != cid.as_str()));
    assert!(bob
        .get("/api/conversations?q=secret")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    assert!(bob
        .get("/api/characters")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());

    assert_eq!(
        alice.get(&format!("/api/conversations/{cid}")).await.bytes,
        before
    );
    assert_eq!(
        alice.get(&format!("/api/characters/{ch}")).await.bytes,
        character_before
    );
}

/// Reads a reply's stream until the first piece of text, then returns what was seen.
async fn first_delta(response: &mut reqwest::Response) -> (Vec<Value>, String) {
    let mut buffer = String::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended before any text");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        let complete = match buffer.rfind("\n\n") {
            Some(end) => &buffer[..end + 2],
            None => continue,
        };
        let events = parse_events(complete);
        if events.iter().any(|e| e["type"] == "delta") {
            let text = events
                .iter()
                .filter(|e| e["type"] == "delta")
                .map(|e| e["text"].as_str().unwrap())
                .collect();
            return (events, text);
        }
    }
}

/// How many times a test that must catch a reply mid-way asks again when the random model ended
/// its reply before the test could interrupt it.
const ATTEMPTS: usize = 8;

#[tokio::test]
async fn a_browser_that_goes_away_stops_the_reply_and_keeps_its_text() {
    let server = start().await;
    let (_, bob) = household(&server).await;
    let c = bob.post("/api/conversations", json!({})).await.json();
    let cid = c["id"].as_str().unwrap();
    for _ in 0..ATTEMPTS {
        let mut response = bob
            .request(Method::POST, &format!("/api/conversations/{cid}/messages"))
            .json(&json!({ "content": "Go on and on" }))
            .send()
            .await
            .unwrap();
        let (events, seen) = first_delta(&mut response).await;
        let reply_id = events[1]["message"]["id"].as_str().unwrap().to_string();
        drop(response); // the stop button
        let mut reply = Value::Null;
        for _ in 0..200 {
            let messages =
                bob.get(&format!("/api/conversations/{cid}")).await.json()["messages"].clone();
            reply = messages
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == reply_id.as_str())
                .unwrap()
                .clone();
            if reply["status"] != "streaming" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            reply["content"].as_str().unwrap().starts_with(&seen),
            "{reply}"
        );
        if reply["status"] == "complete" {
            continue; // it finished before the browser left
        }
        assert_eq!(reply["status"], "stopped", "{reply}");
        return;
    }
    panic!("every reply finished before the browser went away");
}

const CHILD_DATABASE: &str = "CONCH_APP_TEST_CHILD_DATABASE";
const CHILD_PORT_FILE: &str = "CONCH_APP_TEST_CHILD_PORT_FILE";

/// Not a test by itself: the server process that `killed_mid_reply_loses_nothing_acknowledged`
/// starts (this test binary run again) and kills.
#[test]
#[ignore = "run as a child process by killed_mid_reply_loses_nothing_acknowledged"]
fn app_server_child_process() {
    let (Ok(url), Ok(port_file)) = (
        std::env::var(CHILD_DATABASE),
        std::env::var(CHILD_PORT_FILE),
    ) else {
        return;
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            serve_and_announce(&url, listener, &port_file, port).await;
        });
}

async fn serve_and_announce(
    url: &str,
    listener: tokio::net::TcpListener,
    port_file: &str,
    port: u16,
) {
    let store = Store::open(url).await.expect("the store opens");
    let state = AppState::with_store(model(), &config(), store)
        .await
        .unwrap();
    let partial = format!("{port_file}.partial");
    std::fs::write(&partial, port.to_string()).unwrap();
    std::fs::rename(&partial, port_file).unwrap();
    axum::serve(listener, router(state)).await.unwrap();
}

/// Starts the server as a child process over `db`, has Bob ask something, kills the process
/// with SIGKILL once the first text arrived, and checks the database. False when the reply was
/// already complete when the kill landed (the test then tries again).
async fn kill_mid_reply(db: &TestDatabase) -> bool {
    let dir = conch_app::testing::temp_dir("conch-kill");
    let port_file = dir.join("port");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "app_server_child_process",
            "--nocapture",
        ])
        .env(CHILD_DATABASE, &db.url)
        .env(CHILD_PORT_FILE, &port_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut port = None;
    for _ in 0..1200 {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            port = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(dir);
    let port = port.expect("the child server started");
    let server = Server {
        base: format!("http://127.0.0.1:{port}"),
        _db: None,
    };
    let (_, bob) = household(&server).await;
    let c = bob.post("/api/conversations", json!({})).await.json();
    let cid = c["id"].as_str().unwrap().to_string();
    let mut response = bob
        .request(Method::POST, &format!("/api/conversations/{cid}/messages"))
        .json(&json!({ "content": "Keep talking" }))
        .send()
        .await
        .unwrap();
    let (events, seen) = first_delta(&mut response).await;
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let question_id = events[0]["message"]["id"].as_str().unwrap().to_string();
    let reply_id = events[1]["message"]["id"].as_str().unwrap().to_string();
    drop(response);

    // Straight from the database: the question, and the reply with at least what was shown.
    let store = Store::open(&db.url).await.unwrap();
    let bob_id = store
        .verify_password("bob", "bob password")
        .await
        .unwrap()
        .id;
    assert_eq!(
        store.message(&bob_id, &question_id).await.unwrap().content,
        "Keep talking"
    );
    let reply = store.message(&bob_id, &reply_id).await.unwrap();
    assert!(
        reply.content.starts_with(&seen),
        "saved {:?}, shown {seen:?}",
        reply.content
    );
    store.close().await;
    if reply.status == conch_app::Status::Complete {
        return false;
    }
    assert_eq!(reply.status, conch_app::Status::Streaming);

    // A restarted server marks it stopped and serves it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let url = db.url.clone();
    tokio::spawn(async move { serve_on(&url, listener).await });
    let server = Server { base, _db: None };
    let mut bob = Client::new(&server);
    bob.sign_in("bob", "bob password", false).await;
    let messages = bob.get(&format!("/api/conversations/{cid}")).await.json()["messages"].clone();
    assert_eq!(messages[0]["content"], "Keep talking");
    assert_eq!(messages[1]["status"], "stopped");
    assert_eq!(messages[1]["content"].as_str().unwrap(), reply.content);
    true
}

/// On SQLite, and on PostgreSQL when `CONCH_TEST_DATABASE_URL` is set.
#[tokio::test]
async fn killed_mid_reply_loses_nothing_acknowledged() {
    let postgres = conch_app::testing::postgres_url().is_some();
    for backend in ["sqlite", "postgres"] {
        if backend == "postgres" && !postgres {
            continue;
        }
        let mut caught = false;
        for _ in 0..ATTEMPTS {
            let db = if backend == "sqlite" {
                conch_app::testing::sqlite().await
            } else {
                conch_app::testing::postgres().await.expect("configured")
            };
            if kill_mid_reply(&db).await {
                caught = true;
                break;
            }
        }
        assert!(
            caught,
            "{backend}: every reply finished before the server was killed"
        );
    }
}
