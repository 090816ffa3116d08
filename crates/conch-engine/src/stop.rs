//! Stop strings over streamed text: text that might be the start of a stop string is held back
//! until it is known not to be, so a client never sees any part of a stop string.

#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text received but not yet released.
    pending: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StopScan {
    /// This text may be released; generation goes on.
    Continue(String),
    /// A stop string was found: release this text (everything before it) and stop.
    Stopped(String),
}

impl StopStrings {
    pub fn new(stops: impl IntoIterator<Item = String>) -> StopStrings {
        StopStrings {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Adds newly decoded text; returns what can be released now.
    pub fn push(&mut self, text: &str) -> StopScan {
        self.pending.push_str(text);
        let earliest = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = earliest {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopScan::Stopped(out);
        }
        let hold = self.held_suffix_len();
        let release = self.pending.len() - hold;
        let out = self.pending[..release].to_string();
        self.pending.drain(..release);
        StopScan::Continue(out)
    }

    /// Generation ended for another reason: whatever was held back is ordinary text after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of some stop string,
    /// measured on char boundaries.
    fn held_suffix_len(&self) -> usize {
        let p = &self.pending;
        let mut best = 0;
        for stop in &self.stops {
            for (start, _) in p.char_indices() {
                let suffix = &p[start..];
                if suffix.len() <= best {
                    break;
                }
                if stop.starts_with(suffix) {
                    best = suffix.len();
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopStrings::new(stops.iter().map(|s| s.to_string()));
        let mut out = String::new();
        for p in pieces {
            match s.push(p) {
                StopScan::Continue(t) => out += &t,
                StopScan::Stopped(t) => return (out + &t, true),
            }
        }
        (out + &s.finish(), false)
    }

    #[test]
    fn stop_split_across_pieces_is_never_released() {
        assert_eq!(
            run(&["</end>"], &["Hello </", "en", "d> more"]),
            ("Hello ".into(), true)
        );
        assert_eq!(run(&["###"], &["a#", "#b"]), ("a##b".into(), false));
        assert_eq!(
            run(&["\n\nUser:"], &["Hi\n", "\nUs", "er: x"]),
            ("Hi".into(), true)
        );
    }

    #[test]
    fn earliest_stop_wins_and_unicode_is_safe() {
        assert_eq!(run(&["世界", "b"], &["a", "b世界"]), ("a".into(), true));
        assert_eq!(run(&["é!"], &["café", " ok"]), ("café ok".into(), false));
    }

    #[test]
    fn release_is_immediate_when_no_prefix_matches() {
        let mut s = StopStrings::new(["STOP".to_string()]);
        assert_eq!(s.push("hello "), StopScan::Continue("hello ".into()));
        assert_eq!(s.push("ST"), StopScan::Continue(String::new()));
        assert_eq!(s.push("ART"), StopScan::Continue("START".into()));
    }
}
