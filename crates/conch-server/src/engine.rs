//! The engine thread: owns up to `parallel` sequences and steps them together — one batched
//! forward pass per step over every running sequence (continuous batching with chunked prefill,
//! paged KV cache and prefix cache: see `conch_engine::batch`). Requests join and leave between
//! steps. Model work never runs on the async runtime.

use crate::metrics::Metrics;
use conch_engine::{
    BatchConfig, ExpertCounts, FinishReason, GenerateOptions, LoadedModel, Scheduler, Sequence,
    TokenLogprobs,
};
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
        /// Log-probabilities of the tokens this text came from (when asked for).
        logprobs: Vec<TokenLogprobs>,
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
    /// Log-probabilities of tokens whose text is not yet sent.
    logprobs: Vec<TokenLogprobs>,
}

fn run(model: &LoadedModel, shared: &Shared, parallel: usize, context: usize) {
    let metrics = &shared.metrics;
    let scheduler = Scheduler::new(model, BatchConfig::new(context, parallel));
    let is_moe = model.model.config().moe.is_some();
    let mut active: Vec<Active> = Vec::new();
    loop {
        metrics.record_kv(scheduler.pool_stats());
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
                scheduler.start(&job.prompt, &job.options)
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
                        logprobs: Vec::new(),
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

        // A dropped client frees its sequence (and its cache blocks) now.
        active.retain(|a| {
            let closed = a.job.events.is_closed();
            if closed {
                metrics.record_cancelled();
                end(shared);
            }
            !closed
        });
        // Sequences whose client has not read what it has wait; the rest step together.
        let mut ready: Vec<&mut Active> = active
            .iter_mut()
            .filter(|a| a.job.events.capacity() > 0)
            .collect();
        if ready.is_empty() {
            if !active.is_empty() {
                // Every running sequence waits on its client: sleep until a job arrives or a
                // moment passes.
                let state = shared.lock();
                if state.waiting.is_empty() && !state.shutdown {
                    let _ = shared.wake.wait_timeout(state, Duration::from_millis(2));
                }
            }
            continue;
        }
        let mut experts = ExpertCounts::default();
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            let mut sequences: Vec<&mut Sequence> =
                ready.iter_mut().map(|a| &mut a.sequence).collect();
            let observer = is_moe.then_some(&mut experts as &mut dyn conch_engine::RoutingObserver);
            scheduler.step(&mut sequences, observer)
        }));
        let steps = match stepped {
            Ok(Ok(steps)) => steps,
            failed => {
                let message = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the engine failed while generating".to_string(),
                };
                for a in ready.iter_mut() {
                    metrics.active_sequences.fetch_sub(1, Ordering::Relaxed);
                    fail(shared, &a.job, message.clone());
                    a.sequence.cancel();
                }
                active.retain(|a| !a.sequence.is_finished());
                continue;
            }
        };
        if is_moe {
            metrics.record_experts(&experts.counts);
        }
        for (a, step) in ready.iter_mut().zip(steps) {
            if step.token.is_some() {
                let now = Instant::now();
                match a.last_token {
                    None => metrics.record_time_to_first_token(now - a.enqueued),
                    Some(last) => metrics.record_inter_token(now - last),
                }
                a.last_token = Some(now);
                metrics.record_token();
            }
            a.logprobs.extend(step.logprobs);
            let finished = step.finished.map(|reason| Finished {
                reason,
                completion_tokens: a.sequence.generation().tokens.len(),
            });
            if step.text.is_empty() && finished.is_none() {
                continue;
            }
            if finished.is_some() {
                // Before the last event, so a client that saw its reply sees the slot free.
                end(shared);
            }
            // Capacity was checked above and only this thread sends, so this cannot be full.
            let _ = a.job.events.try_send(Event::Text {
                index: a.job.index,
                text: step.text,
                logprobs: std::mem::take(&mut a.logprobs),
                finished,
            });
        }
        active.retain(|a| !a.sequence.is_finished());
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
