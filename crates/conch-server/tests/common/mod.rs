//! An HTTP client for the app's `/api/*` routes as a browser uses them (cookie store, the CSRF
//! header), shared by the app and memoir tests.
#![allow(dead_code)] // each test binary uses its own subset

use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as `X-CSRF-Token`; tests change it to check the server refuses a wrong one.
    pub csrf: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// This reply, after checking its status.
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "{}", self.text());
        self
    }
}

impl Client {
    /// A client of the server at `base` (`http://host:port`); slow model work may take minutes.
    pub fn at(base: &str) -> Client {
        Client {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .timeout(Duration::from_secs(900))
                .build()
                .unwrap(),
            csrf: None,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(csrf) = &self.csrf {
            r = r.header("X-CSRF-Token", csrf);
        }
        r
    }

    pub async fn send(&self, r: reqwest::RequestBuilder) -> Reply {
        let response = r.send().await.unwrap();
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.unwrap().to_vec(),
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut r = self.request(method, path);
        if let Some(body) = body {
            r = r.json(&body);
        }
        self.send(r).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// Posts raw bytes (a recording, an image) with their content type.
    pub async fn upload(&self, path: &str, mime: &str, bytes: Vec<u8>) -> Reply {
        let r = self
            .request(Method::POST, path)
            .header("Content-Type", mime)
            .body(bytes);
        self.send(r).await
    }

    /// The events of a streaming request, each `data:` payload parsed.
    pub async fn stream(&self, method: Method, path: &str, body: Option<Value>) -> Vec<Value> {
        let r = self.call(method, path, body).await.expect(200);
        assert!(r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        parse_events(&String::from_utf8(r.bytes).unwrap())
    }

    /// Signs in (signs up the household's first account when `first`), keeping the CSRF token;
    /// returns the user.
    pub async fn sign_in(&mut self, username: &str, password: &str, first: bool) -> Value {
        let path = if first {
            "/api/auth/signup"
        } else {
            "/api/auth/login"
        };
        let r = self
            .post(path, json!({ "username": username, "password": password }))
            .await
            .expect(if first { 201 } else { 200 });
        let body = r.json();
        self.csrf = Some(body["csrf_token"].as_str().unwrap().to_string());
        body["user"].clone()
    }
}

/// The `data:` payloads of a server-sent event stream, parsed.
pub fn parse_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"));
            serde_json::from_str(data).unwrap()
        })
        .collect()
}
