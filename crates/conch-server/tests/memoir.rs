//! Memoir mode's routes (docs/memoir-api.md) over a real listener: projects and plans, the
//! interview, recordings kept when speech fails, owner scoping, drafts with their traceability,
//! and the book exports. Most tests run on the tiny random fixture model; these need more:
//! - drafting and follow-ups on SmolLM2 (/root/.cache/conch/models/…): skipped with a printed
//!   reason unless CONCH_REQUIRE_REAL_MODELS=1;
//! - the English voice round trip (scripts/fetch-speech): skipped unless CONCH_REQUIRE_SPEECH=1;
//! - epubcheck and pdftotext (scripts/check-book --install): skipped unless
//!   CONCH_REQUIRE_BOOK_TOOLS=1.

use conch_app::Store;
use conch_engine::{load, LoadedModel};
use conch_memoir::draft::{check_draft, DraftParagraph, Segment, Speaker, Verdict};
use conch_server::{router, AppState, ServerConfig};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

mod common;
use common::{Client, Reply};

const SMOLLM2: &str = "/root/.cache/conch/models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Writes past the test harness's capture, so skips show in every run.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn required(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|v| v == "1")
}

/// Skips (printing why), or fails when `variable`=1 demands the thing.
fn unavailable(variable: &str, reason: &str) {
    assert!(!required(variable), "{variable}=1 but {reason}");
    report(&format!("skipping: {reason}"));
}

fn fixture_model() -> Arc<LoadedModel> {
    static MODEL: OnceLock<Arc<LoadedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/models/llama_tied/model.gguf");
            Arc::new(load(&path).expect("fixture model loads"))
        })
        .clone()
}

fn smollm2() -> Option<Arc<LoadedModel>> {
    if !Path::new(SMOLLM2).is_file() {
        unavailable(
            "CONCH_REQUIRE_REAL_MODELS",
            &format!("{SMOLLM2} is missing (scripts/fetch-models)"),
        );
        return None;
    }
    Some(Arc::new(load(Path::new(SMOLLM2)).expect("SmolLM2 loads")))
}

struct Server {
    base: String,
    _db: conch_app::testing::TestDatabase,
}

async fn start(model: Arc<LoadedModel>, speech_dir: Option<PathBuf>) -> Server {
    let db = conch_app::testing::sqlite().await;
    let base = start_on(&db.url, model, speech_dir).await;
    Server { base, _db: db }
}

/// A server over an existing database; returns its base URL.
async fn start_on(url: &str, model: Arc<LoadedModel>, speech_dir: Option<PathBuf>) -> String {
    let config = ServerConfig {
        parallel: 2,
        ctx: 4096,
        speech_dir,
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let store = Store::open(url).await.expect("the store opens");
    let state = AppState::with_store(model, &config, store)
        .await
        .expect("valid settings");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    base
}

/// A speech folder with nothing in it: speech is "not installed".
fn no_speech() -> Option<PathBuf> {
    Some(conch_app::testing::temp_dir("conch-no-speech"))
}

impl Client {
    fn new(server: &Server) -> Client {
        Client::at(&server.base)
    }
}

/// The admin (the first account) and a second person of the household.
async fn two_people(server: &Server) -> (Client, Client) {
    let mut admin = Client::new(server);
    admin.sign_in("alice", "correct horse", true).await;
    admin
        .post(
            "/api/users",
            json!({ "username": "bob", "password": "correct horse" }),
        )
        .await
        .expect(201);
    let mut bob = Client::new(server);
    bob.sign_in("bob", "correct horse", false).await;
    (admin, bob)
}

async fn new_project(client: &Client, teller: &str, language: &str) -> Value {
    client
        .post(
            "/api/memoir/projects",
            json!({ "teller_name": teller, "language": language }),
        )
        .await
        .expect(201)
        .json()
}

async fn next_question(client: &Client, project: &str) -> Value {
    client
        .post(
            &format!("/api/memoir/projects/{project}/interview/next"),
            json!(null),
        )
        .await
        .expect(200)
        .json()
}

/// The transcript's segments as conch-memoir sees them, for checking drafts independently.
async fn transcript_segments(client: &Client, project: &str) -> Vec<Segment> {
    let transcript = client
        .get(&format!("/api/memoir/projects/{project}/transcript"))
        .await
        .expect(200)
        .json();
    let mut segments = Vec::new();
    for chapter in transcript["chapters"].as_array().unwrap() {
        for turn in chapter["turns"].as_array().unwrap() {
            segments.push(Segment {
                id: turn["question_segment"].as_u64().unwrap() as u32,
                speaker: Speaker::Interviewer,
                text: turn["question"].as_str().unwrap().to_string(),
            });
            let answer = turn["answer"].as_str().unwrap();
            if !answer.is_empty() {
                segments.push(Segment {
                    id: turn["answer_segment"].as_u64().unwrap() as u32,
                    speaker: Speaker::Teller,
                    text: answer.to_string(),
                });
            }
        }
    }
    segments
}

#[tokio::test]
async fn projects_plans_and_a_resumable_typed_interview() {
    let server = start(fixture_model(), no_speech()).await;
    let (alice, _) = two_people(&server).await;
    let project = new_project(&alice, "Grandma Li", "zh-Hans").await;
    let id = project["id"].as_str().unwrap();
    assert_eq!(project["language"], "zh-Hans");
    assert_eq!(project["title"], "Grandma Li");
    let chapters = project["plan"]["chapters"].as_array().unwrap().clone();
    assert!(chapters.len() >= 3, "{project}");
    assert!(
        chapters[0]["questions"][0]["text"]
            .as_str()
            .unwrap()
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
        "a Chinese project gets Chinese questions: {project}"
    );
    let bad = alice
        .post(
            "/api/memoir/projects",
            json!({ "teller_name": "X", "language": "fr" }),
        )
        .await
        .expect(400);
    assert!(bad.text().contains("language"), "{}", bad.text());

    // The family moves the second chapter first, renames it, adds a question and a chapter.
    let second = &chapters[1];
    let mut edited = vec![json!({
        "id": second["id"],
        "title": "Where we lived",
        "questions": [{ "text": "What did your street sound like in the morning?" }],
    })];
    edited.push(
        json!({ "title": "The war years", "questions": [{ "text": "Where were you in 1942?" }] }),
    );
    for chapter in chapters.iter().skip(2) {
        edited.push(chapter.clone());
    }
    let changed = alice
        .put(
            &format!("/api/memoir/projects/{id}/plan"),
            json!({ "chapters": edited }),
        )
        .await
        .expect(200)
        .json();
    let plan = &changed["plan"]["chapters"];
    assert_eq!(plan[0]["id"], second["id"]);
    assert_eq!(plan[0]["title"], "Where we lived");
    let new_chapter = plan[1]["id"].as_str().unwrap();
    assert!(!new_chapter.is_empty());
    assert!(plan[1]["questions"][0]["id"]
        .as_str()
        .is_some_and(|q| !q.is_empty()));
    let duplicate = json!({ "chapters": [
        { "id": "same", "title": "A", "questions": [] },
        { "id": "same", "title": "B", "questions": [] },
    ]});
    alice
        .put(&format!("/api/memoir/projects/{id}/plan"), duplicate)
        .await
        .expect(400);

    // One question at a time, in the family's order; asking again gives the same question.
    let first = next_question(&alice, id).await;
    let question = &first["question"];
    assert_eq!(question["chapter_id"], second["id"]);
    assert_eq!(question["kind"], "starter");
    assert_eq!(
        question["text"],
        "What did your street sound like in the morning?"
    );
    let again = next_question(&alice, id).await;
    assert_eq!(again["question"]["turn_id"], question["turn_id"]);

    let turn_id = question["turn_id"].as_str().unwrap();
    let answered = alice
        .post(
            &format!("/api/memoir/turns/{turn_id}/answer"),
            json!({ "text": "Bicycle bells, and the tofu seller calling out in the lane behind our house." }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(answered["turn"]["answer_source"], "typed");
    assert!(answered["turn"]["answer"]
        .as_str()
        .unwrap()
        .contains("tofu seller"));
    let next = &answered["next"];
    assert!(next.is_object(), "{answered}");
    assert_ne!(next["turn_id"], question["turn_id"]);
    alice
        .post(
            &format!("/api/memoir/turns/{turn_id}/answer"),
            json!({ "text": "again" }),
        )
        .await
        .expect(409);
    alice
        .post(
            &format!("/api/memoir/turns/{turn_id}/answer"),
            json!({ "text": "  " }),
        )
        .await
        .expect(400);

    // Resuming later gives the question that was waiting.
    let resumed = next_question(&alice, id).await;
    assert_eq!(resumed["question"]["turn_id"], next["turn_id"]);

    // Closing every chapter but the new one sends the interview there.
    for chapter in changed["plan"]["chapters"].as_array().unwrap() {
        let chapter_id = chapter["id"].as_str().unwrap();
        if chapter_id != new_chapter {
            alice
                .post(
                    &format!("/api/memoir/projects/{id}/chapters/{chapter_id}/close"),
                    json!({ "closed": true }),
                )
                .await
                .expect(200);
        }
    }
    let moved = next_question(&alice, id).await;
    assert_eq!(moved["question"]["chapter_id"], new_chapter);
    assert_eq!(moved["question"]["text"], "Where were you in 1942?");

    let transcript = alice
        .get(&format!("/api/memoir/projects/{id}/transcript"))
        .await
        .expect(200)
        .json();
    let turns: Vec<&Value> = transcript["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["turns"].as_array().unwrap())
        .collect();
    // The fixture model's follow-up may be unusable, which ends the topic: `next` is then
    // already the new chapter's question.
    let asked: std::collections::HashSet<&Value> = [
        &question["turn_id"],
        &next["turn_id"],
        &moved["question"]["turn_id"],
    ]
    .into_iter()
    .collect();
    assert_eq!(turns.len(), asked.len(), "{transcript}");
    let segment_ids: Vec<u64> = turns
        .iter()
        .flat_map(|t| {
            [
                t["question_segment"].as_u64().unwrap(),
                t["answer_segment"].as_u64().unwrap(),
            ]
        })
        .collect();
    let unique: std::collections::HashSet<&u64> = segment_ids.iter().collect();
    assert_eq!(unique.len(), segment_ids.len(), "segment ids are unique");

    let renamed = alice
        .call(
            Method::PATCH,
            &format!("/api/memoir/projects/{id}"),
            Some(json!({ "title": "Grandma's Shanghai" })),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(renamed["title"], "Grandma's Shanghai");
    let listed = alice.get("/api/memoir/projects").await.expect(200).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    alice
        .call(Method::DELETE, &format!("/api/memoir/projects/{id}"), None)
        .await
        .expect(204);
    alice
        .get(&format!("/api/memoir/projects/{id}"))
        .await
        .expect(404);
}

#[tokio::test]
async fn recordings_are_kept_when_speech_is_not_installed() {
    let server = start(fixture_model(), no_speech()).await;
    let (alice, _) = two_people(&server).await;
    let speech = alice.get("/api/memoir/speech").await.expect(200).json();
    assert_eq!(speech["installed"], false);
    let project = new_project(&alice, "Walter", "en").await;
    let id = project["id"].as_str().unwrap();
    let question = next_question(&alice, id).await["question"].clone();
    let turn_id = question["turn_id"].as_str().unwrap();

    let audio: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let refused = alice
        .upload(
            &format!("/api/memoir/turns/{turn_id}/recording"),
            "audio/webm;codecs=opus",
            audio.clone(),
        )
        .await
        .expect(503);
    assert_eq!(refused.json()["error"]["code"], "speech_unavailable");
    assert!(
        refused.text().contains("scripts/fetch-speech"),
        "{}",
        refused.text()
    );

    let transcript = alice
        .get(&format!("/api/memoir/projects/{id}/transcript"))
        .await
        .expect(200)
        .json();
    let turn = transcript["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["turns"].as_array().unwrap())
        .find(|t| t["id"] == turn_id)
        .unwrap()
        .clone();
    let recording = &turn["recordings"][0];
    assert_eq!(recording["status"], "pending");
    assert_eq!(recording["bytes"], 5000);
    let stored = alice
        .get(recording["audio_url"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(stored.headers["content-type"], "audio/webm;codecs=opus");
    assert_eq!(
        stored.bytes, audio,
        "the recording comes back byte for byte"
    );
    let retry = alice
        .post(
            &format!(
                "/api/memoir/recordings/{}/retry",
                recording["id"].as_str().unwrap()
            ),
            json!(null),
        )
        .await
        .expect(503);
    assert!(retry.text().contains("scripts/fetch-speech"));

    // The interview goes on (typing still works) while the recording waits.
    let moved_on = next_question(&alice, id).await;
    assert_ne!(moved_on["question"]["turn_id"], question["turn_id"]);
    let typed = alice
        .post(
            &format!(
                "/api/memoir/turns/{}/answer",
                moved_on["question"]["turn_id"].as_str().unwrap()
            ),
            json!({ "text": "We had a dog called Rex." }),
        )
        .await
        .expect(200);
    assert!(typed.json()["next"].is_object());
    alice
        .get("/api/memoir/tts?text=Hello&language=en")
        .await
        .expect(503);
}

#[tokio::test]
async fn another_person_gets_404_from_every_memoir_endpoint() {
    let server = start(fixture_model(), no_speech()).await;
    let (alice, bob) = two_people(&server).await;
    let project = new_project(&alice, "Walter", "en").await;
    let id = project["id"].as_str().unwrap();
    let question = next_question(&alice, id).await["question"].clone();
    let turn_id = question["turn_id"].as_str().unwrap();
    let chapter = question["chapter_id"].as_str().unwrap();
    alice
        .upload(
            &format!("/api/memoir/turns/{turn_id}/recording"),
            "audio/ogg",
            vec![1, 2, 3],
        )
        .await
        .expect(503);
    let transcript = alice
        .get(&format!("/api/memoir/projects/{id}/transcript"))
        .await
        .json();
    let recording = transcript["chapters"][0]["turns"][0]["recordings"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let project_path = format!("/api/memoir/projects/{id}");
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, project_path.clone(), None),
        (
            Method::PATCH,
            project_path.clone(),
            Some(json!({ "title": "mine" })),
        ),
        (Method::DELETE, project_path.clone(), None),
        (
            Method::PUT,
            format!("{project_path}/plan"),
            Some(json!({ "chapters": [{ "title": "x", "questions": [] }] })),
        ),
        (
            Method::POST,
            format!("{project_path}/chapters/{chapter}/close"),
            Some(json!({ "closed": true })),
        ),
        (Method::POST, format!("{project_path}/interview/next"), None),
        (Method::GET, format!("{project_path}/transcript"), None),
        (
            Method::POST,
            format!("/api/memoir/turns/{turn_id}/answer"),
            Some(json!({ "text": "not mine" })),
        ),
        (
            Method::GET,
            format!("/api/memoir/recordings/{recording}/audio"),
            None,
        ),
        (
            Method::POST,
            format!("/api/memoir/recordings/{recording}/retry"),
            None,
        ),
        (Method::GET, format!("{project_path}/chapters"), None),
        (
            Method::GET,
            format!("{project_path}/chapters/{chapter}"),
            None,
        ),
        (
            Method::PUT,
            format!("{project_path}/chapters/{chapter}"),
            Some(json!({ "paragraphs": [] })),
        ),
        (
            Method::POST,
            format!("{project_path}/chapters/{chapter}/draft"),
            None,
        ),
        (
            Method::POST,
            format!("{project_path}/chapters/{chapter}/approve"),
            Some(json!({ "approved": true })),
        ),
        (Method::GET, format!("{project_path}/book.epub"), None),
        (Method::GET, format!("{project_path}/book.pdf"), None),
        (Method::GET, format!("{project_path}/book.md"), None),
    ];
    for (method, path, body) in attempts {
        let r = bob.call(method.clone(), &path, body).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "not_found");
    }
    let r = bob
        .upload(
            &format!("/api/memoir/turns/{turn_id}/recording"),
            "audio/ogg",
            vec![1],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(bob
        .get("/api/memoir/projects")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    // Alice's data is untouched.
    alice.get(&project_path).await.expect(200);
    // Signed out: 401, not a leak.
    let stranger = Client::new(&server);
    stranger.get(&project_path).await.expect(401);
}

/// Answers the first chapter's questions, drafts it, and checks every paragraph against the
/// transcript with conch-memoir's checker (independently of what the server reported).
async fn answer_and_draft(
    alice: &Client,
    id: &str,
    answers: &[&str],
) -> (String, Value, Vec<Segment>) {
    let mut chapter = None;
    for text in answers {
        let question = next_question(alice, id).await["question"].clone();
        let this_chapter = question["chapter_id"].as_str().unwrap().to_string();
        if chapter.get_or_insert(this_chapter.clone()) != &this_chapter {
            break;
        }
        alice
            .post(
                &format!(
                    "/api/memoir/turns/{}/answer",
                    question["turn_id"].as_str().unwrap()
                ),
                json!({ "text": text }),
            )
            .await
            .expect(200);
    }
    let chapter = chapter.unwrap();
    let draft = alice
        .post(
            &format!("/api/memoir/projects/{id}/chapters/{chapter}/draft"),
            json!(null),
        )
        .await
        .expect(200)
        .json();
    let segments = transcript_segments(alice, id).await;
    let paragraphs: Vec<DraftParagraph> = draft["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| DraftParagraph {
            text: p["text"].as_str().unwrap().to_string(),
            sources: p["sources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap() as u32)
                .collect(),
        })
        .collect();
    assert!(!paragraphs.is_empty(), "{draft}");
    for (check, paragraph) in check_draft(&paragraphs, &segments).iter().zip(&paragraphs) {
        assert_ne!(check.verdict, Verdict::Rejected, "{paragraph:?} in {draft}");
        let teller_source = paragraph.sources.iter().any(|id| {
            segments
                .iter()
                .any(|s| s.id == *id && s.speaker == Speaker::Teller)
        });
        assert!(
            teller_source,
            "a paragraph cites something the teller said: {paragraph:?}"
        );
    }
    let cited: Vec<u64> = draft["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    for paragraph in &paragraphs {
        for source in &paragraph.sources {
            assert!(
                cited.contains(&u64::from(*source)),
                "segment {source} is given with the chapter"
            );
        }
    }
    (chapter, draft, segments)
}

const WALTER_ANSWERS: [&str; 3] = [
    "I was born in Duluth in 1941, in the little house on Fourth Street by the lake.",
    "My mother baked bread every Saturday and the whole street could smell it.",
    "My brother Tom and I skated on the frozen harbour every winter.",
];

#[tokio::test]
async fn drafts_edits_approval_and_the_book_exports() {
    let server = start(fixture_model(), no_speech()).await;
    let (alice, _) = two_people(&server).await;
    let project = new_project(&alice, "Walter", "en").await;
    let id = project["id"].as_str().unwrap();
    let token = project["share_token"].as_str().unwrap();
    let (chapter, draft, _) = answer_and_draft(&alice, id, &WALTER_ANSWERS).await;
    assert_eq!(draft["approved"], false);
    let chapter_path = format!("/api/memoir/projects/{id}/chapters/{chapter}");

    // The family edits the first paragraph and adds one of their own.
    let mut paragraphs: Vec<Value> = draft["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!({ "text": p["text"], "sources": p["sources"] }))
        .collect();
    let first_sources = paragraphs[0]["sources"].clone();
    paragraphs[0] =
        json!({ "text": "Duluth, 1941: that is where my story starts.", "sources": first_sources });
    paragraphs.push(json!({ "text": "(Added by his granddaughter.)", "sources": [] }));
    let edited = alice
        .put(&chapter_path, json!({ "paragraphs": paragraphs }))
        .await
        .expect(200)
        .json();
    assert_eq!(edited["paragraphs"][0]["edited_by_family"], true);
    assert_eq!(edited["paragraphs"][0]["verdict"], "edited");
    let unchanged = edited["paragraphs"].as_array().unwrap().len() > 2;
    if unchanged {
        assert_eq!(edited["paragraphs"][1]["edited_by_family"], false);
    }
    alice
        .put(
            &chapter_path,
            json!({ "paragraphs": [{ "text": "x", "sources": [9999] }] }),
        )
        .await
        .expect(400);

    // A re-draft keeps the family's paragraphs; asked to, it drops them.
    let redraft = alice
        .post(
            &format!("{chapter_path}/draft"),
            json!({ "keep_edits": true }),
        )
        .await
        .expect(200)
        .json();
    let texts: Vec<&str> = redraft["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&"Duluth, 1941: that is where my story starts."),
        "{redraft}"
    );
    assert!(
        texts.contains(&"(Added by his granddaughter.)"),
        "{redraft}"
    );
    let fresh = alice
        .post(
            &format!("{chapter_path}/draft"),
            json!({ "keep_edits": false }),
        )
        .await
        .expect(200)
        .json();
    assert!(fresh["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["edited_by_family"] == false));

    let approved = alice
        .post(
            &format!("{chapter_path}/approve"),
            json!({ "approved": true }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(approved["approved"], true);
    let undrafted = project["plan"]["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] != chapter.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    alice
        .post(
            &format!("/api/memoir/projects/{id}/chapters/{undrafted}/draft"),
            json!(null),
        )
        .await
        .expect(400);

    // Markdown: the chapter's text and the link to its recordings page, from the Host header.
    let markdown = alice
        .get(&format!("/api/memoir/projects/{id}/book.md"))
        .await
        .expect(200);
    assert!(markdown.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/markdown"));
    assert!(markdown.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let markdown = markdown.text();
    let listen_url = format!("{}/listen/{token}/{chapter}", server.base);
    assert!(markdown.contains(&listen_url), "{markdown}");
    let first_text = fresh["paragraphs"][0]["text"].as_str().unwrap();
    assert!(
        markdown.contains(first_text.split_whitespace().next().unwrap()),
        "{markdown}"
    );
    let page = Client::new(&server)
        .get(&format!("/listen/{token}/{chapter}"))
        .await
        .expect(200);
    let title = project["plan"]["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == chapter.as_str())
        .unwrap()["title"]
        .as_str()
        .unwrap();
    assert!(
        page.text().contains(&format!("<h1>{title}</h1>")),
        "{}",
        page.text()
    );
    Client::new(&server)
        .get(&format!("/listen/wrong-token/{chapter}"))
        .await
        .expect(404);

    let epub = alice
        .get(&format!("/api/memoir/projects/{id}/book.epub"))
        .await
        .expect(200);
    assert_eq!(epub.headers["content-type"], "application/epub+zip");
    check_epub(&epub.bytes);
    let pdf = alice
        .get(&format!("/api/memoir/projects/{id}/book.pdf"))
        .await;
    check_pdf(pdf, &[first_text]);
}

fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// epubcheck must accept the EPUB without errors or warnings (scripts/check-book conventions).
fn check_epub(epub: &[u8]) {
    let Some(epubcheck) = find_tool("epubcheck") else {
        return unavailable("CONCH_REQUIRE_BOOK_TOOLS", "epubcheck is not installed");
    };
    let dir = conch_app::testing::temp_dir("conch-memoir-epub");
    let path = dir.join("book.epub");
    std::fs::write(&path, epub).unwrap();
    // Debian ships epubcheck as an executable jar, which runs directly only with binfmt_misc.
    let is_jar = std::fs::read(&epubcheck).is_ok_and(|bytes| bytes.starts_with(b"PK"));
    let mut command = if is_jar {
        let mut java = Command::new("java");
        java.arg("-jar").arg(&epubcheck);
        java
    } else {
        Command::new(&epubcheck)
    };
    let output = command.arg(&path).output().expect("epubcheck runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "epubcheck rejected the book:\n{log}"
    );
    assert!(!log.contains("WARNING") && !log.contains("ERROR"), "{log}");
}

/// pdftotext must find each text in the PDF (words compared without line breaks).
fn check_pdf(pdf: Reply, texts: &[&str]) {
    if pdf.status == 500 && pdf.text().contains("font") {
        return unavailable(
            "CONCH_REQUIRE_BOOK_TOOLS",
            &format!("no font for the PDF: {}", pdf.text()),
        );
    }
    let pdf = pdf.expect(200);
    assert_eq!(pdf.headers["content-type"], "application/pdf");
    let Some(pdftotext) = find_tool("pdftotext") else {
        return unavailable("CONCH_REQUIRE_BOOK_TOOLS", "pdftotext is not installed");
    };
    let dir = conch_app::testing::temp_dir("conch-memoir-pdf");
    let path = dir.join("book.pdf");
    std::fs::write(&path, &pdf.bytes).unwrap();
    let output = Command::new(pdftotext)
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "pdftotext failed");
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    let found = squeeze(&String::from_utf8_lossy(&output.stdout));
    for text in texts {
        assert!(
            found.contains(&squeeze(text)),
            "{text:?} not in the PDF text:\n{found}"
        );
    }
}

#[tokio::test]
async fn drafting_on_smollm2_is_traceable_to_the_transcript() {
    let Some(model) = smollm2() else { return };
    let server = start(model, no_speech()).await;
    let (alice, _) = two_people(&server).await;
    let project = new_project(&alice, "Walter", "en").await;
    let id = project["id"].as_str().unwrap();
    let (_, draft, _) = answer_and_draft(&alice, id, &WALTER_ANSWERS).await;
    report(&format!(
        "SmolLM2 draft (drafted_by {}): {}",
        draft["drafted_by"],
        serde_json::to_string_pretty(&draft["paragraphs"]).unwrap()
    ));
}

/// The English voice round trip: the question's answer spoken by the server's TTS, uploaded as
/// the recording, transcribed, and followed up by SmolLM2.
#[tokio::test]
async fn english_voice_answer_round_trip() {
    let speech_dir = conch_speech::SpeechConfig::default_dir();
    if !conch_speech::SpeechConfig::new(&speech_dir).is_installed() {
        return unavailable(
            "CONCH_REQUIRE_SPEECH",
            &format!(
                "speech is not installed in {} (scripts/fetch-speech)",
                speech_dir.display()
            ),
        );
    }
    let Some(model) = smollm2() else { return };
    let server = start(model, Some(speech_dir)).await;
    let (alice, _) = two_people(&server).await;
    assert_eq!(
        alice.get("/api/memoir/speech").await.json()["installed"],
        true
    );
    let project = new_project(&alice, "Walter", "en").await;
    let id = project["id"].as_str().unwrap();
    let question = next_question(&alice, id).await["question"].clone();

    let spoken_question = alice
        .get(&format!(
            "/api/memoir/tts?text={}&language=en&slow=1",
            question["text"]
                .as_str()
                .unwrap()
                .replace(' ', "%20")
                .replace('?', "%3F")
        ))
        .await
        .expect(200);
    assert_eq!(spoken_question.headers["content-type"], "audio/wav");
    assert!(spoken_question.bytes.starts_with(b"RIFF"));

    let answer =
        "I grew up on a farm near the river, and every summer my sister and I picked strawberries.";
    let wav = alice
        .get(&format!(
            "/api/memoir/tts?text={}&language=en",
            answer.replace(' ', "%20").replace(',', "%2C")
        ))
        .await
        .expect(200)
        .bytes;
    let turn_id = question["turn_id"].as_str().unwrap();
    let uploaded = alice
        .upload(
            &format!("/api/memoir/turns/{turn_id}/recording"),
            "audio/wav",
            wav.clone(),
        )
        .await
        .expect(201)
        .json();
    report(&format!("voice round trip: {uploaded}"));
    assert_eq!(uploaded["recording"]["status"], "transcribed", "{uploaded}");
    let heard = uploaded["turn"]["answer"].as_str().unwrap().to_lowercase();
    for word in ["farm", "river", "summer", "strawberries"] {
        assert!(
            heard.contains(word),
            "{word:?} not in the transcript {heard:?}"
        );
    }
    assert_eq!(uploaded["turn"]["answer_source"], "voice");
    let next = &uploaded["next"];
    assert_eq!(next["kind"], "follow_up", "{uploaded}");
    assert_eq!(next["chapter_id"], question["chapter_id"]);
    assert!(!next["text"].as_str().unwrap().trim().is_empty());
    let stored = alice
        .get(uploaded["recording"]["audio_url"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(stored.bytes, wav);
}

/// A recording stored while speech was missing is transcribed by the retry endpoint of a server
/// that has speech (the same database), and its transcript becomes the answer.
#[tokio::test]
async fn a_recording_kept_without_speech_is_transcribed_on_retry() {
    let speech_dir = conch_speech::SpeechConfig::default_dir();
    if !conch_speech::SpeechConfig::new(&speech_dir).is_installed() {
        return unavailable(
            "CONCH_REQUIRE_SPEECH",
            &format!(
                "speech is not installed in {} (scripts/fetch-speech)",
                speech_dir.display()
            ),
        );
    }
    let without = start(fixture_model(), no_speech()).await;
    let (alice, _) = two_people(&without).await;
    let project = new_project(&alice, "Walter", "en").await;
    let id = project["id"].as_str().unwrap();
    let question = next_question(&alice, id).await["question"].clone();
    let turn_id = question["turn_id"].as_str().unwrap();

    let with = start_on(&without._db.url, fixture_model(), Some(speech_dir)).await;
    let mut alice_there = Client::at(&with);
    alice_there.sign_in("alice", "correct horse", false).await;
    let wav = alice_there
        .get("/api/memoir/tts?text=We%20kept%20chickens%20behind%20the%20barn.&language=en")
        .await
        .expect(200)
        .bytes;
    alice
        .upload(
            &format!("/api/memoir/turns/{turn_id}/recording"),
            "audio/wav",
            wav,
        )
        .await
        .expect(503);
    let transcript = alice
        .get(&format!("/api/memoir/projects/{id}/transcript"))
        .await
        .json();
    let recording = transcript["chapters"][0]["turns"][0]["recordings"][0].clone();
    assert_eq!(recording["status"], "pending");
    let retried = alice_there
        .post(
            &format!(
                "/api/memoir/recordings/{}/retry",
                recording["id"].as_str().unwrap()
            ),
            json!(null),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(retried["status"], "transcribed", "{retried}");
    assert_eq!(retried["attempts"], 1);
    let transcript = alice_there
        .get(&format!("/api/memoir/projects/{id}/transcript"))
        .await
        .json();
    let answer = transcript["chapters"][0]["turns"][0]["answer"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        answer.contains("chickens") && answer.contains("barn"),
        "{answer:?}"
    );
}
