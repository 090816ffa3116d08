//! The engine thread: owns up to `parallel` sequences and steps them in turn, one token each, so
//! requests join and leave between steps. Model work never runs on the async runtime.
//!
//! Each step of each sequence is a separate forward pass over one token; batching the sequences
//! of a step into one forward pass is later work.

use crate::metrics::Metrics;
use conch_engine::{FinishReason, GenerateOptions, LoadedModel, Sequence, Session};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One sequence to generate: a prompt and its options; what it produces goes to `events`.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    /// The choice index this sequence answers (`choices[index]`).
    pub index: usize,
    pub events: mpsc::Sender<Event>,
}

/// What a sequence reports to its request. Each step sends at most one.
#[derive(Debug)]
pub(crate) enum Event {
    /// New text of choice `index`; `finished` is set on its last event.
    Text {
        index: usize,
        text: String,
        finished: Option<Finished>,
    },
    /// The sequence failed and was dropped.
    Failed { message: String },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Finished {
    pub reason: FinishReason,
    pub completion_tokens: usize,
}

/// Events a request's channel holds before its sequences pause: a client that stops reading
/// stops its own generation instead of piling text up in memory.
pub(crate) const EVENTS_PER_SEQUENCE: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("the server is busy: {outstanding} sequences are running or queued and it takes at most {limit}")]
pub(crate) struct QueueFull {
    pub outstanding: usize,
    pub limit: usize,
}

struct QueueState {
    waiting: VecDeque<(Job, Instant)>,
    /// Sequences waiting or running.
    outstanding: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<QueueState>,
    wake: Condvar,
    /// Most sequences waiting or running at once.
    limit: usize,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the engine thread; dropping the last one stops it.
pub(crate) struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    /// Starts the engine thread. `context` is each sequence's KV-cache size in tokens.
    pub fn start(
        model: Arc<LoadedModel>,
        parallel: usize,
        context: usize,
        max_queue: usize,
        metrics: Arc<Metrics>,
    ) -> Engine {
        let parallel = parallel.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(QueueState {
                waiting: VecDeque::new(),
                outstanding: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            limit: parallel + max_queue,
            metrics,
        });
        let engine_shared = shared.clone();
        std::thread::Builder::new()
            .name("conch-engine".into())
            .spawn(move || run(&model, &engine_shared, parallel, context))
            .expect("spawning the engine thread");
        Engine { shared }
    }

    /// Most sequences one request may ask for.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    /// Queues all of `jobs` or none of them.
    pub fn submit(&self, jobs: Vec<Job>) -> Result<(), QueueFull> {
        let mut state = self.shared.lock();
        if state.outstanding + jobs.len() > self.shared.limit {
            return Err(QueueFull {
                outstanding: state.outstanding,
                limit: self.shared.limit,
            });
        }
        state.outstanding += jobs.len();
        let now = Instant::now();
        state.waiting.extend(jobs.into_iter().map(|j| (j, now)));
        self.shared
            .metrics
            .queue_depth
            .store(state.waiting.len(), Ordering::Relaxed);
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
    }
}

struct Active<'m> {
    sequence: Sequence<'m>,
    job: Job,
    enqueued: Instant,
    last_token: Option<Instant>,
}

fn run(model: &LoadedModel, shared: &Shared, parallel: usize, context: usize) {
    let metrics = &shared.metrics;
    let mut active: Vec<Active> = Vec::new();
    loop {
        let Some(admitted) = admit(shared, active.len(), parallel) else {
            return;
        };
        for (job, enqueued) in admitted {
            if job.events.is_closed() {
                metrics.record_cancelled();
                release(shared, 1);
                continue;
            }
            let started = catch_unwind(AssertUnwindSafe(|| {
                Sequence::start(
                    Session::new(model, Some(context)),
                    &job.prompt,
                    &job.options,
                )
            }));
            match started {
                Ok(Ok(sequence)) => {
                    metrics.record_prompt(job.prompt.len());
                    metrics.active_sequences.fetch_add(1, Ordering::Relaxed);
                    active.push(Active {
                        sequence,
                        job,
                        enqueued,
                        last_token: None,
                    });
                }
                Ok(Err(e)) => fail(shared, &job, e.to_string()),
                Err(_) => fail(
                    shared,
                    &job,
                    "the engine failed while reading the prompt".into(),
                ),
            }
        }

        let mut progressed = false;
        active.retain_mut(|a| {
            if a.job.events.is_closed() {
                metrics.record_cancelled();
                end(shared);
                return false;
            }
            if a.job.events.capacity() == 0 {
                return true; // the client has not read what it has; wait for it
            }
            progressed = true;
            let step = match catch_unwind(AssertUnwindSafe(|| a.sequence.step())) {
                Ok(Ok(step)) => step,
                Ok(Err(e)) => {
                    metrics.active_sequences.fetch_sub(1, Ordering::Relaxed);
                    fail(shared, &a.job, e.to_string());
                    return false;
                }
                Err(_) => {
                    metrics.active_sequences.fetch_sub(1, Ordering::Relaxed);
                    fail(shared, &a.job, "the engine failed while generating".into());
                    return false;
                }
            };
            if step.token.is_some() {
                let now = Instant::now();
                match a.last_token {
                    None => metrics.record_time_to_first_token(now - a.enqueued),
                    Some(last) => metrics.record_inter_token(now - last),
                }
                a.last_token = Some(now);
                metrics.record_token();
            }
            let finished = step.finished.map(|reason| Finished {
                reason,
                completion_tokens: a.sequence.generation().tokens.len(),
            });
            if step.text.is_empty() && finished.is_none() {
                return true;
            }
            if finished.is_some() {
                // Before the last event, so a client that saw its reply sees the slot free.
                end(shared);
            }
            // Capacity was checked above and only this thread sends, so this cannot be full.
            let _ = a.job.events.try_send(Event::Text {
                index: a.job.index,
                text: step.text,
                finished,
            });
            finished.is_none()
        });
        if !active.is_empty() && !progressed {
            // Every running sequence waits on its client: sleep until a job arrives or a moment passes.
            let state = shared.lock();
            if state.waiting.is_empty() && !state.shutdown {
                let _ = shared.wake.wait_timeout(state, Duration::from_millis(2));
            }
        }
    }
}

/// Takes waiting jobs for the free slots, blocking while there is nothing at all to do.
/// `None` once the server shuts down.
fn admit(shared: &Shared, running: usize, parallel: usize) -> Option<Vec<(Job, Instant)>> {
    let mut state = shared.lock();
    while running == 0 && state.waiting.is_empty() && !state.shutdown {
        state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    if state.shutdown {
        return None;
    }
    let take = parallel.saturating_sub(running).min(state.waiting.len());
    let jobs: Vec<_> = state.waiting.drain(..take).collect();
    shared
        .metrics
        .queue_depth
        .store(state.waiting.len(), Ordering::Relaxed);
    Some(jobs)
}

/// A running sequence leaves its slot.
fn end(shared: &Shared) {
    shared
        .metrics
        .active_sequences
        .fetch_sub(1, Ordering::Relaxed);
    release(shared, 1);
}

fn release(shared: &Shared, sequences: usize) {
    let mut state = shared.lock();
    state.outstanding = state.outstanding.saturating_sub(sequences);
}

fn fail(shared: &Shared, job: &Job, message: String) {
    release(shared, 1);
    let _ = job.events.try_send(Event::Failed { message });
}
