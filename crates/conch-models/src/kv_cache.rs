//! Keys and values of the tokens a sequence has seen so far, per layer.

use crate::ModelError;

/// K/V of one sequence: per layer, rows of `kv_dim` f32 (all KV heads of one position).
/// Memory grows as tokens are appended, up to `capacity` tokens.
#[derive(Clone, Debug)]
pub struct KvCache {
    capacity: usize,
    len: usize,
    kv_dim: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl KvCache {
    /// An empty cache for `num_layers` layers of `kv_dim`-wide K and V rows.
    pub fn new(num_layers: usize, kv_dim: usize, capacity: usize) -> KvCache {
        KvCache {
            capacity,
            len: 0,
            kv_dim,
            keys: vec![Vec::new(); num_layers],
            values: vec![Vec::new(); num_layers],
        }
    }

    /// Positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions this cache may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keeps the first `n` positions (a shared prompt prefix, say); no-op when `n >= len()`.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            self.len = n;
            for rows in self.keys.iter_mut().chain(self.values.iter_mut()) {
                rows.truncate(n * self.kv_dim);
            }
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    pub(crate) fn num_layers(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Errors unless `extra` more positions fit, and reserves their memory in every layer.
    pub(crate) fn reserve(&mut self, extra: usize) -> Result<(), ModelError> {
        let needed = self.len.checked_add(extra).filter(|n| *n <= self.capacity);
        let Some(needed) = needed else {
            return Err(ModelError::ContextFull {
                capacity: self.capacity,
                needed: self.len.saturating_add(extra),
            });
        };
        let floats = needed
            .checked_mul(self.kv_dim)
            .ok_or_else(|| ModelError::OutOfMemory(format!("KV cache of {needed} positions")))?;
        for rows in self.keys.iter_mut().chain(self.values.iter_mut()) {
            rows.try_reserve(floats - rows.len()).map_err(|e| {
                ModelError::OutOfMemory(format!("KV cache of {needed} positions: {e}"))
            })?;
        }
        Ok(())
    }

    /// Appends K and V rows (`n × kv_dim` each) to `layer`. Callers reserve first; the length
    /// only advances through [`KvCache::commit`] once every layer has its rows.
    pub(crate) fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        self.keys[layer].extend_from_slice(keys);
        self.values[layer].extend_from_slice(values);
    }

    /// Marks `n` appended positions as stored.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// All K and V rows of `layer`, including ones appended but not yet committed.
    pub(crate) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_enforced_and_truncate_keeps_a_prefix() {
        let mut c = KvCache::new(2, 3, 4);
        c.reserve(3).unwrap();
        for l in 0..2 {
            c.append(l, &[1.0; 9], &[2.0; 9]);
        }
        c.commit(3);
        assert_eq!(c.len(), 3);
        match c.reserve(2) {
            Err(ModelError::ContextFull {
                capacity: 4,
                needed: 5,
            }) => {}
            other => panic!("expected ContextFull, got {other:?}"),
        }
        c.truncate(1);
        assert_eq!((c.len(), c.layer(1).0.len()), (1, 3));
        c.clear();
        assert!(c.is_empty() && c.layer(0).1.is_empty());
    }

    #[test]
    fn huge_capacity_does_not_allocate_up_front() {
        let c = KvCache::new(4, 1024, usize::MAX);
        assert_eq!(c.capacity(), usize::MAX);
    }
}
