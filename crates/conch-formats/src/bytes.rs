//! A cheaply clonable view into shared bytes (a memory map or an owned buffer).

use std::ops::{Deref, Range};
use std::sync::Arc;

#[derive(Clone)]
pub struct Bytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl Bytes {
    /// A view of `range` within `owner`; `None` if the range does not lie inside it.
    pub fn slice_of(
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        range: Range<usize>,
    ) -> Option<Bytes> {
        let len = (*owner).as_ref().len();
        (range.start <= range.end && range.end <= len).then_some(Bytes { owner, range })
    }

    pub fn from_vec(v: Vec<u8>) -> Bytes {
        let len = v.len();
        Bytes {
            owner: Arc::new(v),
            range: 0..len,
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.range.len())
    }
}
