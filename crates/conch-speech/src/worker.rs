//! One running worker process and the line protocol with it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::WorkerCommand;
use crate::error::SpeechError;

/// How many of the worker's last stderr lines are kept to explain a failure.
const STDERR_TAIL_LINES: usize = 40;
/// How many of them an error message quotes.
const STDERR_LINES_QUOTED: usize = 8;

pub(crate) struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    /// Lines the worker wrote to stdout, read by a thread of their own so that waiting for an
    /// answer can time out.
    answers: Receiver<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Signals once the worker's stderr has been read to its end.
    stderr_done: mpsc::Receiver<()>,
    next_id: u64,
}

impl WorkerProcess {
    pub(crate) fn spawn(command: &WorkerCommand) -> Result<Self, SpeechError> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .env("PYTHONIOENCODING", "utf-8")
            // The models are local files; nothing may reach for a model hub.
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                SpeechError::WorkerStart(format!(
                    "cannot run {}: {error}",
                    command.program.display()
                ))
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SpeechError::WorkerStart(
                "the worker's pipes are missing".into(),
            ));
        };
        let (sender, answers) = mpsc::channel();
        thread::spawn(move || forward_lines(stdout, |line| sender.send(line).is_ok()));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let tail = Arc::clone(&stderr_tail);
        let (stderr_closed, stderr_done) = mpsc::channel();
        thread::spawn(move || {
            forward_lines(stderr, |line| {
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
                true
            });
            let _ = stderr_closed.send(());
        });
        Ok(WorkerProcess {
            child,
            stdin,
            answers,
            stderr_tail,
            stderr_done,
            next_id: 1,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `{"id", "op", ...fields}` and waits up to `timeout` for the answer with that id.
    /// An error of kind WorkerDied, Timeout or Protocol leaves the process unusable.
    pub(crate) fn request(
        &mut self,
        operation: &'static str,
        fields: Map<String, Value>,
        timeout: Duration,
    ) -> Result<Value, SpeechError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = fields;
        request.insert("id".into(), id.into());
        request.insert("op".into(), operation.into());
        let mut line = Value::Object(request).to_string();
        line.push('\n');
        if let Err(error) = self
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
        {
            return Err(SpeechError::WorkerDied {
                operation,
                detail: format!("cannot send the request ({error}); {}", self.exit_detail()),
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let answer = match self.answers.recv_timeout(remaining) {
                Ok(answer) => answer,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(SpeechError::Timeout {
                        operation,
                        limit: timeout,
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(SpeechError::WorkerDied {
                        operation,
                        detail: self.exit_detail(),
                    })
                }
            };
            let answer: Value = serde_json::from_str(&answer).map_err(|_| {
                SpeechError::Protocol(format!(
                    "expected a JSON answer, got {:?}",
                    truncate(&answer, 200)
                ))
            })?;
            // An answer to another id belongs to an earlier request that was given up on.
            if answer.get("id").and_then(Value::as_u64) == Some(id) {
                return parse_answer(answer);
            }
        }
    }

    /// How the process ended (waiting a moment for it: its output closing comes first) and the
    /// last lines it wrote to stderr.
    fn exit_detail(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // Its last words may still be in the pipe: let the reader reach the end.
                    let _ = self.stderr_done.recv_timeout(Duration::from_millis(500));
                    break format!("it exited ({status})");
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => break "it closed its output but is still running".to_string(),
                Err(error) => break format!("its state is unknown ({error})"),
            }
        };
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let quoted: Vec<&str> = tail
            .iter()
            .skip(tail.len().saturating_sub(STDERR_LINES_QUOTED))
            .map(String::as_str)
            .collect();
        if quoted.is_empty() {
            status
        } else {
            format!("{status}; its last words: {}", quoted.join(" | "))
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `{"ok": true, "result": R}` gives R; `{"ok": false, "error": {"kind", "message"}}` the error
/// of that kind.
fn parse_answer(answer: Value) -> Result<Value, SpeechError> {
    match answer.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
        Some(false) => {
            let error = answer.get("error");
            let field = |name| error.and_then(|e| e.get(name)).and_then(Value::as_str);
            let message = field("message").unwrap_or("no message").to_string();
            Err(match field("kind") {
                Some("bad_request") => SpeechError::BadRequest(message),
                Some("bad_audio") => SpeechError::BadAudio(message),
                Some("not_installed") => SpeechError::NotInstalled(message),
                _ => SpeechError::Failed(message),
            })
        }
        None => Err(SpeechError::Protocol(format!(
            "answer without \"ok\": {}",
            truncate(&answer.to_string(), 200)
        ))),
    }
}

/// Reads lines (lossily decoded, line ends removed) until end of input or until `deliver`
/// says nobody listens any more.
fn forward_lines(source: impl Read, mut deliver: impl FnMut(String) -> bool) {
    let mut reader = BufReader::new(source);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer).trim_end().to_string();
                if !deliver(line) {
                    return;
                }
            }
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
