//! Counters and histograms for `GET /metrics`, in Prometheus' text format.

use conch_engine::KvPoolStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last entry counts those above every bound.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {}\n{name}_count {cumulative}",
            self.sum
        );
    }
}

/// Everything `/metrics` reports. Shared by the HTTP handlers and the engine thread.
#[derive(Debug)]
pub struct Metrics {
    /// Responses by (route, HTTP status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    cancelled_sequences: AtomicU64,
    time_to_first_token: Mutex<Histogram>,
    inter_token_latency: Mutex<Histogram>,
    pub(crate) queue_depth: AtomicUsize,
    pub(crate) active_sequences: AtomicUsize,
    /// The KV pool and prefix cache as of the engine's last step.
    kv: Mutex<KvPoolStats>,
    /// Tokens routed to each expert of each MoE layer (`[layer][expert]`).
    expert_tokens: Mutex<Vec<Vec<u64>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled_sequences: AtomicU64::new(0),
            time_to_first_token: Mutex::new(Histogram::new(TTFT_BUCKETS)),
            inter_token_latency: Mutex::new(Histogram::new(INTER_TOKEN_BUCKETS)),
            queue_depth: AtomicUsize::new(0),
            active_sequences: AtomicUsize::new(0),
            kv: Mutex::default(),
            expert_tokens: Mutex::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn record_request(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((route.to_string(), status)).or_insert(0) += 1;
    }

    pub(crate) fn record_prompt(&self, tokens: usize) {
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_token(&self) {
        self.generated_tokens.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_cancelled(&self) {
        self.cancelled_sequences.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_time_to_first_token(&self, d: Duration) {
        self.time_to_first_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(d.as_secs_f64());
    }

    pub(crate) fn record_inter_token(&self, d: Duration) {
        self.inter_token_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(d.as_secs_f64());
    }

    pub(crate) fn record_kv(&self, stats: KvPoolStats) {
        *self.kv.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }

    /// Adds `counts` (`[layer][expert]`) to the tokens routed per expert.
    pub(crate) fn record_experts(&self, counts: &[Vec<u64>]) {
        let mut total = self.expert_tokens.lock().unwrap_or_else(|e| e.into_inner());
        if total.len() < counts.len() {
            total.resize_with(counts.len(), Vec::new);
        }
        for (row, add) in total.iter_mut().zip(counts) {
            if row.len() < add.len() {
                row.resize(add.len(), 0);
            }
            for (t, a) in row.iter_mut().zip(add) {
                *t += a;
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP conch_requests_total HTTP responses by route and status code.\n# TYPE conch_requests_total counter\n");
        for ((route, status), count) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "conch_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "conch_prompt_tokens_total",
            "Prompt tokens of admitted sequences.",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "conch_generated_tokens_total",
            "Tokens generated.",
            self.generated_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "conch_cancelled_sequences_total",
            "Sequences dropped because their client went away.",
            self.cancelled_sequences.load(Ordering::Relaxed),
        );
        let gauge = |out: &mut String, name: &str, help: &str, value: usize| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "conch_queue_depth",
            "Sequences waiting for a slot.",
            self.queue_depth.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "conch_active_sequences",
            "Sequences being generated.",
            self.active_sequences.load(Ordering::Relaxed),
        );
        let kv = *self.kv.lock().unwrap_or_else(|e| e.into_inner());
        gauge(
            &mut out,
            "conch_kv_blocks_used",
            "KV-cache blocks held by sequences or the prefix cache.",
            kv.used_blocks,
        );
        gauge(
            &mut out,
            "conch_kv_blocks_free",
            "KV-cache blocks not yet handed out.",
            kv.total_blocks.saturating_sub(kv.used_blocks),
        );
        gauge(
            &mut out,
            "conch_prefix_cache_blocks",
            "KV-cache blocks kept in the prefix cache.",
            kv.cached_blocks,
        );
        counter(
            &mut out,
            "conch_prefix_cache_hit_tokens_total",
            "Prompt tokens taken from the prefix cache instead of computed.",
            kv.hit_tokens,
        );
        let experts = self.expert_tokens.lock().unwrap_or_else(|e| e.into_inner());
        if experts.iter().any(|row| !row.is_empty()) {
            out.push_str("# HELP conch_expert_tokens_total Tokens routed to each expert of each mixture-of-experts layer.\n# TYPE conch_expert_tokens_total counter\n");
            for (layer, row) in experts.iter().enumerate() {
                for (expert, count) in row.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "conch_expert_tokens_total{{layer=\"{layer}\",expert=\"{expert}\"}} {count}"
                    );
                }
            }
        }
        drop(experts);
        self.time_to_first_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render(
                &mut out,
                "conch_time_to_first_token_seconds",
                "From a sequence entering the queue to its first generated token.",
            );
        self.inter_token_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render(
                &mut out,
                "conch_inter_token_latency_seconds",
                "Between consecutive tokens of one sequence.",
            );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for x in [0.05, 0.1, 0.5, 3.0] {
            h.observe(x);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(
            out.contains("x_count 4\n") && out.contains("x_sum 3.65"),
            "{out}"
        );
    }
}
