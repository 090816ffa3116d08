//! Keys and values of the tokens a sequence has seen so far, in fixed-size blocks from a shared
//! pool (a paged KV cache).
//!
//! A [`KvPool`] hands out blocks of [`BLOCK_TOKENS`] positions; each block holds those positions'
//! K and V rows for every layer. A [`KvCache`] is one sequence's table of blocks. Full blocks can be
//! shared: the pool keeps a prefix cache of them, keyed by the tokens they hold and all tokens
//! before them, so sequences that start alike (a shared system prompt) compute that prefix once.
//! A block is freed when nothing holds it; cached blocks no sequence holds are evicted, least
//! recently used first, when the pool needs room.

use crate::ModelError;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

/// Positions per block unless a pool is made with another size.
pub const BLOCK_TOKENS: usize = 16;

/// The shape of one position's cache rows in every layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub layers: usize,
    /// Floats of one position's key row in one layer (all KV heads; for latent attention the
    /// latent vector and the shared rotary key).
    pub key_width: usize,
    /// Floats of one position's value row (0 where values are recomputed from the keys).
    pub value_width: usize,
    /// Some layers fold every position into a recurrent state (linear attention): such a cache
    /// can only grow or start over, so it neither shares prefixes nor goes back to one.
    pub recurrent: bool,
}

impl KvLayout {
    fn block_floats(&self, block_tokens: usize) -> usize {
        self.layers * block_tokens * (self.key_width + self.value_width)
    }

    /// Offsets of `layer`'s key and value rows in a block.
    fn layer_offsets(&self, layer: usize, block_tokens: usize) -> (usize, usize) {
        let keys = layer * block_tokens * (self.key_width + self.value_width);
        (keys, keys + block_tokens * self.key_width)
    }

    /// Bytes one cached position takes.
    pub fn bytes_per_token(&self) -> usize {
        self.layers * (self.key_width + self.value_width) * std::mem::size_of::<f32>()
    }
}

/// A block of cache rows. Returns its memory to the pool when the last holder drops it.
pub struct KvBlock {
    data: Vec<f32>,
    pool: Arc<PoolShared>,
}

impl Drop for KvBlock {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.used -= 1;
        state.free.push(std::mem::take(&mut self.data));
    }
}

/// A cached full block: its tokens and the hash of every token before them, checked on lookup so a
/// hash collision can never hand out the wrong rows.
struct CachedBlock {
    parent: u64,
    tokens: Box<[u32]>,
    block: Arc<KvBlock>,
    last_used: u64,
}

struct PoolState {
    /// Blocks alive (held by a sequence, by the prefix cache, or both).
    used: usize,
    /// Memory of dropped blocks, reused before allocating more.
    free: Vec<Vec<f32>>,
    prefix: HashMap<u64, CachedBlock>,
    clock: u64,
    /// Prompt positions served from the prefix cache since the pool was made.
    hit_tokens: u64,
}

struct PoolShared {
    layout: KvLayout,
    block_tokens: usize,
    max_blocks: usize,
    state: Mutex<PoolState>,
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Blocks shared by the sequences of one model (see the module documentation).
#[derive(Clone)]
pub struct KvPool {
    shared: Arc<PoolShared>,
}

/// What a pool holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvPoolStats {
    pub total_blocks: usize,
    pub used_blocks: usize,
    /// Blocks in the prefix cache (some may also be held by sequences).
    pub cached_blocks: usize,
    pub hit_tokens: u64,
}

impl KvPool {
    /// A pool of at most `max_blocks` blocks of `block_tokens` positions (at least 1) of
    /// `layout`. Memory is taken as blocks are first used, not up front.
    pub fn new(layout: KvLayout, block_tokens: usize, max_blocks: usize) -> KvPool {
        KvPool {
            shared: Arc::new(PoolShared {
                layout,
                block_tokens: block_tokens.max(1),
                max_blocks,
                state: Mutex::new(PoolState {
                    used: 0,
                    free: Vec::new(),
                    prefix: HashMap::new(),
                    clock: 0,
                    hit_tokens: 0,
                }),
            }),
        }
    }

    /// Blocks needed to hold `tokens` positions.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.shared.block_tokens)
    }

    pub fn layout(&self) -> KvLayout {
        self.shared.layout
    }

    pub fn block_tokens(&self) -> usize {
        self.shared.block_tokens
    }

    pub fn stats(&self) -> KvPoolStats {
        let state = self.shared.lock();
        KvPoolStats {
            total_blocks: self.shared.max_blocks,
            used_blocks: state.used,
            cached_blocks: state.prefix.len(),
            hit_tokens: state.hit_tokens,
        }
    }

    /// An empty cache for one sequence of at most `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache {
            pool: self.shared.clone(),
            blocks: Vec::new(),
            states: vec![Vec::new(); self.shared.layout.layers],
            len: 0,
            capacity,
        }
    }

    /// A cache holding the longest run of whole blocks at the start of `tokens` that the prefix
    /// cache has (possibly none). The caller runs the rest of `tokens` through the model.
    pub fn cache_with_prefix(&self, tokens: &[u32], capacity: usize) -> KvCache {
        let mut cache = self.new_cache(capacity);
        if self.shared.layout.recurrent {
            return cache;
        }
        let mut state = self.shared.lock();
        state.clock += 1;
        let now = state.clock;
        let bt = self.shared.block_tokens;
        let mut parent = ROOT_HASH;
        for chunk in tokens.chunks_exact(bt) {
            if cache.len + bt > capacity {
                break;
            }
            let hash = block_hash(parent, chunk);
            let Some(entry) = state.prefix.get_mut(&hash) else {
                break;
            };
            if entry.parent != parent || entry.tokens[..] != *chunk {
                break;
            }
            entry.last_used = now;
            cache.blocks.push(entry.block.clone());
            cache.len += bt;
            parent = hash;
        }
        state.hit_tokens += cache.len as u64;
        cache
    }

    /// Offers the full blocks of `cache`, whose positions hold `tokens` in order, to the prefix
    /// cache so later sequences starting with the same tokens can share them.
    pub fn share_prefix(&self, cache: &KvCache, tokens: &[u32]) {
        if !Arc::ptr_eq(&cache.pool, &self.shared) || self.shared.layout.recurrent {
            return;
        }
        let bt = self.shared.block_tokens;
        let full = cache.len.min(tokens.len()) / bt;
        let mut state = self.shared.lock();
        state.clock += 1;
        let now = state.clock;
        let mut parent = ROOT_HASH;
        for (chunk, block) in tokens.chunks_exact(bt).zip(&cache.blocks[..full]) {
            let hash = block_hash(parent, chunk);
            match state.prefix.get_mut(&hash) {
                Some(entry) => entry.last_used = now,
                None => {
                    state.prefix.insert(
                        hash,
                        CachedBlock {
                            parent,
                            tokens: chunk.into(),
                            block: block.clone(),
                            last_used: now,
                        },
                    );
                }
            }
            parent = hash;
        }
    }

    /// Drops every cached block no sequence holds.
    pub fn clear_prefix_cache(&self) {
        let evicted: Vec<CachedBlock> = {
            let mut state = self.shared.lock();
            let keys: Vec<u64> = state
                .prefix
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.block) == 1)
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| state.prefix.remove(k)).collect()
        };
        // Dropped outside the lock: a block's drop takes it.
        drop(evicted);
    }
}

const ROOT_HASH: u64 = 0x636f_6e63_685f_6b76;

fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl PoolShared {
    /// A new block, evicting the least recently used cached block nobody holds when the pool is
    /// full.
    fn allocate(self: &Arc<Self>) -> Result<KvBlock, ModelError> {
        let data = loop {
            let mut state = self.lock();
            if state.used < self.max_blocks {
                state.used += 1;
                break state.free.pop().unwrap_or_default();
            }
            let victim = state
                .prefix
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.block) == 1)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            let Some(victim) = victim.and_then(|k| state.prefix.remove(&k)) else {
                return Err(ModelError::KvPoolFull {
                    blocks: self.max_blocks,
                    block_tokens: self.block_tokens,
                });
            };
            // Dropped outside the lock: the block's drop returns its memory to the pool.
            drop(state);
            drop(victim);
        };
        let floats = self.layout.block_floats(self.block_tokens);
        let data = if data.len() == floats {
            data
        } else {
            let mut v = Vec::new();
            if let Err(e) = v.try_reserve_exact(floats) {
                self.lock().used -= 1;
                return Err(ModelError::OutOfMemory(format!(
                    "a KV block of {floats} floats: {e}"
                )));
            }
            v.resize(floats, 0.0);
            v
        };
        Ok(KvBlock {
            data,
            pool: self.clone(),
        })
    }
}

/// One sequence's cache: the blocks holding its positions `0..len()`, in order.
pub struct KvCache {
    pool: Arc<PoolShared>,
    blocks: Vec<Arc<KvBlock>>,
    /// Per layer, the recurrent state of layers that keep one (empty for the others).
    states: Vec<Vec<f32>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// A cache with its own pool, for one sequence of up to `capacity` positions.
    pub fn new(layout: KvLayout, capacity: usize) -> KvCache {
        KvPool::new(layout, BLOCK_TOKENS, capacity.div_ceil(BLOCK_TOKENS)).new_cache(capacity)
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

    pub fn layout(&self) -> KvLayout {
        self.pool.layout
    }

    /// Keeps the first `n` positions (a shared prompt prefix, say); no-op when `n >= len()`.
    /// A recurrent cache cannot go back, so it starts over instead: check [`KvCache::len`].
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            let n = if self.pool.layout.recurrent { 0 } else { n };
            self.len = n;
            self.blocks.truncate(n.div_ceil(self.pool.block_tokens));
            if n == 0 {
                self.states.iter_mut().for_each(Vec::clear);
            }
        }
    }

    /// After a forward pass failed midway: positions appended but not committed are dropped,
    /// and a recurrent cache, whose state may already hold them, starts over.
    pub(crate) fn discard_uncommitted(&mut self) {
        if self.pool.layout.recurrent {
            self.len = 0;
            self.blocks.clear();
            self.states.iter_mut().for_each(Vec::clear);
        }
    }

    /// `layer`'s recurrent state of `floats` values, zero before the first position.
    pub(crate) fn state(&mut self, layer: usize, floats: usize) -> &mut [f32] {
        let state = &mut self.states[layer];
        if state.len() != floats {
            state.clear();
            state.resize(floats, 0.0);
        }
        state
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Errors unless `extra` more positions fit; makes sure the blocks that will hold them exist
    /// and belong to this cache alone (a shared block about to be written is copied first).
    pub(crate) fn reserve(&mut self, extra: usize) -> Result<(), ModelError> {
        let needed = self.len.checked_add(extra).filter(|n| *n <= self.capacity);
        let Some(needed) = needed else {
            return Err(ModelError::ContextFull {
                capacity: self.capacity,
                needed: self.len.saturating_add(extra),
            });
        };
        let bt = self.pool.block_tokens;
        let first = self.len / bt;
        if let Some(block) = self.blocks.get_mut(first) {
            if Arc::get_mut(block).is_none() {
                let mut copy = self.pool.allocate()?;
                copy.data.copy_from_slice(&block.data);
                *block = Arc::new(copy);
            }
        }
        while self.blocks.len() < needed.div_ceil(bt) {
            self.blocks.push(Arc::new(self.pool.allocate()?));
        }
        Ok(())
    }

    /// Writes K and V rows (`n × key_width` and `n × value_width`) of `layer` at positions
    /// `len()..len() + n`. Callers reserve first; the length only advances through
    /// [`KvCache::commit`] once every layer has its rows.
    pub(crate) fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        let layout = self.pool.layout;
        let (kw, vw) = (layout.key_width, layout.value_width);
        let bt = self.pool.block_tokens;
        let (key_off, value_off) = layout.layer_offsets(layer, bt);
        let n = keys.len() / kw.max(1);
        for i in 0..n {
            let pos = self.len + i;
            let block = Arc::get_mut(&mut self.blocks[pos / bt])
                .expect("reserve made the written blocks this cache's own");
            let slot = pos % bt;
            block.data[key_off + slot * kw..][..kw].copy_from_slice(&keys[i * kw..][..kw]);
            if vw > 0 {
                block.data[value_off + slot * vw..][..vw].copy_from_slice(&values[i * vw..][..vw]);
            }
        }
    }

    /// Marks `n` appended positions as stored.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// The rows of `layer`, including ones appended but not yet committed.
    pub(crate) fn layer(&self, layer: usize) -> LayerRows<'_> {
        let layout = self.pool.layout;
        let block_tokens = self.pool.block_tokens;
        let (key_offset, value_offset) = layout.layer_offsets(layer, block_tokens);
        LayerRows {
            blocks: &self.blocks,
            block_tokens,
            key_width: layout.key_width,
            value_width: layout.value_width,
            key_offset,
            value_offset,
        }
    }
}

/// Read access to one layer's cached rows, position by position or a block's run at a time.
#[derive(Clone, Copy)]
pub(crate) struct LayerRows<'a> {
    blocks: &'a [Arc<KvBlock>],
    block_tokens: usize,
    key_width: usize,
    value_width: usize,
    key_offset: usize,
    value_offset: usize,
}

impl<'a> LayerRows<'a> {
    /// The key rows of `positions` as runs of consecutive rows: `(first position, rows)`.
    pub fn key_runs(&self, positions: Range<usize>) -> impl Iterator<Item = (usize, &'a [f32])> {
        self.runs(positions, self.key_offset, self.key_width)
    }

    /// The value rows of `positions` as runs of consecutive rows: `(first position, rows)`.
    pub fn value_runs(&self, positions: Range<usize>) -> impl Iterator<Item = (usize, &'a [f32])> {
        self.runs(positions, self.value_offset, self.value_width)
    }

    fn runs(
        &self,
        positions: Range<usize>,
        offset: usize,
        width: usize,
    ) -> impl Iterator<Item = (usize, &'a [f32])> {
        let (blocks, bt) = (self.blocks, self.block_tokens);
        let mut pos = positions.start;
        let end = positions.end;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let slot = pos % bt;
            let rows = (bt - slot).min(end - pos);
            let data = &blocks[pos / bt].data;
            let run = &data[offset + slot * width..][..rows * width];
            let first = pos;
            pos += rows;
            Some((first, run))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: KvLayout = KvLayout {
        layers: 2,
        key_width: 3,
        value_width: 2,
        recurrent: false,
    };

    fn fill(cache: &mut KvCache, n: usize, base: f32) {
        cache.reserve(n).unwrap();
        for l in 0..LAYOUT.layers {
            let keys: Vec<f32> = (0..n * 3)
                .map(|i| base + (cache.len() * 3 + i) as f32 + 1000.0 * l as f32)
                .collect();
            let values: Vec<f32> = keys.iter().step_by(3).flat_map(|k| [-k, *k]).collect();
            cache.append(l, &keys, &values);
        }
        cache.commit(n);
    }

    fn keys(cache: &KvCache, layer: usize) -> Vec<f32> {
        cache
            .layer(layer)
            .key_runs(0..cache.len())
            .flat_map(|(_, r)| r.iter().copied())
            .collect()
    }

    #[test]
    fn rows_come_back_across_block_boundaries() {
        let mut c = KvCache::new(LAYOUT, 100);
        fill(&mut c, 5, 0.0);
        fill(&mut c, 30, 0.0);
        assert_eq!(c.len(), 35);
        let expected: Vec<f32> = (0..35 * 3).map(|i| 1000.0 + i as f32).collect();
        assert_eq!(keys(&c, 1), expected);
        let runs: Vec<(usize, usize)> = c
            .layer(0)
            .value_runs(10..35)
            .map(|(p, r)| (p, r.len() / 2))
            .collect();
        assert_eq!(runs, vec![(10, 6), (16, 16), (32, 3)]);
        let (_, v) = c.layer(0).value_runs(20..21).next().unwrap();
        assert_eq!(v, &[-60.0, 60.0]);
    }

    #[test]
    fn capacity_is_enforced_and_truncate_keeps_a_prefix() {
        let mut c = KvCache::new(LAYOUT, 20);
        fill(&mut c, 18, 0.0);
        match c.reserve(3) {
            Err(ModelError::ContextFull {
                capacity: 20,
                needed: 21,
            }) => {}
            other => panic!("expected ContextFull, got {other:?}"),
        }
        c.truncate(17);
        assert_eq!((c.len(), c.blocks.len()), (17, 2));
        c.truncate(3);
        assert_eq!((c.len(), c.blocks.len()), (3, 1));
        c.clear();
        assert!(c.is_empty() && c.blocks.is_empty());
    }

    #[test]
    fn prefix_blocks_are_shared_and_copied_before_writing() {
        let pool = KvPool::new(LAYOUT, 16, 8);
        let tokens: Vec<u32> = (0..40).collect();
        let mut a = pool.new_cache(64);
        fill(&mut a, 40, 0.0);
        pool.share_prefix(&a, &tokens);
        assert_eq!(pool.stats().cached_blocks, 2);

        // Same first 35 tokens: two whole blocks come from the cache.
        let mut other = tokens[..35].to_vec();
        other.push(999);
        let mut b = pool.cache_with_prefix(&other, 64);
        assert_eq!(b.len(), 32);
        assert!(Arc::ptr_eq(&a.blocks[1], &b.blocks[1]));
        assert_eq!(pool.stats().used_blocks, 3);
        assert_eq!(pool.stats().hit_tokens, 32);

        // Writing into a shared block (after backing up) copies it first; `a` keeps its rows.
        b.truncate(20);
        fill(&mut b, 4, 5000.0);
        assert!(!Arc::ptr_eq(&a.blocks[1], &b.blocks[1]));
        assert_eq!(keys(&a, 0)[20 * 3], 60.0);
        assert_eq!(keys(&b, 0)[20 * 3], 5060.0);
        assert_eq!(keys(&b, 0)[..60], keys(&a, 0)[..60]);

        // A different first block misses.
        let mut changed = tokens.clone();
        changed[0] = 7;
        assert_eq!(pool.cache_with_prefix(&changed, 64).len(), 0);
    }

    #[test]
    fn a_full_pool_evicts_unheld_cached_blocks_and_then_refuses() {
        let pool = KvPool::new(LAYOUT, 16, 3);
        let tokens: Vec<u32> = (0..32).collect();
        let mut a = pool.new_cache(64);
        fill(&mut a, 32, 0.0);
        pool.share_prefix(&a, &tokens);
        drop(a);
        assert_eq!(pool.stats().used_blocks, 2);
        let mut b = pool.new_cache(64);
        fill(&mut b, 40, 0.0); // needs 3 blocks: one is free, two come from evicting the cache
        assert_eq!(pool.stats().used_blocks, 3);
        assert_eq!(pool.stats().cached_blocks, 0);
        let mut c = pool.new_cache(64);
        assert!(matches!(c.reserve(1), Err(ModelError::KvPoolFull { .. })));
        drop(b);
        assert_eq!(pool.stats().used_blocks, 0);
        c.reserve(1).unwrap();
    }

    #[test]
    fn a_recurrent_cache_starts_over_instead_of_going_back() {
        let layout = KvLayout {
            recurrent: true,
            ..LAYOUT
        };
        let pool = KvPool::new(layout, 4, 16);
        let mut c = pool.new_cache(64);
        c.reserve(6).unwrap();
        c.state(1, 4).copy_from_slice(&[1.0; 4]);
        c.commit(6);
        let tokens: Vec<u32> = (0..6).collect();
        pool.share_prefix(&c, &tokens);
        assert_eq!(pool.stats().cached_blocks, 0);
        assert_eq!(pool.cache_with_prefix(&tokens, 64).len(), 0);
        c.truncate(6);
        assert_eq!(c.len(), 6);
        c.truncate(5);
        assert_eq!(c.len(), 0);
        assert_eq!(c.state(1, 4), &[0.0; 4]);
    }

    #[test]
    fn huge_capacity_does_not_allocate_up_front() {
        let c = KvCache::new(LAYOUT, usize::MAX);
        assert_eq!(c.capacity(), usize::MAX);
        assert_eq!(c.pool.lock().used, 0);
    }
}
