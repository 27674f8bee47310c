//! Sharing of identical strings between resources. Workspaces are mostly made from a few
//! templates (a cluster is many copies of one description), so their property values and
//! service data repeat: each distinct text is kept once and reference-counted. The table is
//! bounded in bytes (`[limits] shared_strings_bytes`): when a new text would overflow it, the
//! texts no resource holds any more are released; if it is still full, the new text is simply
//! not shared. Texts longer than [`MAX_SHARED_LEN`] are never shared, so a large value lives
//! exactly as long as the resource state that holds it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Longest text that is shared; longer ones get their own allocation.
pub const MAX_SHARED_LEN: usize = 64 * 1024;

/// Default byte budget of the table.
pub const DEFAULT_BUDGET: usize = 16 * 1024 * 1024;

static BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);

struct Table {
    set: HashSet<Arc<str>>,
    /// Bytes of text in `set`.
    bytes: usize,
    /// Inserts to skip purging after a purge that found the table full of texts in use (keeps
    /// the cost of purging amortised O(1) per insert).
    purge_skip: usize,
}

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Table { set: HashSet::new(), bytes: 0, purge_skip: 0 }))
}

/// Set the byte budget of the table (`[limits] shared_strings_bytes`).
pub fn set_budget(bytes: usize) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

impl Table {
    /// Drop the texts only the table holds.
    fn release_unused(&mut self) {
        let mut freed = 0;
        self.set.retain(|a| {
            let keep = Arc::strong_count(a) > 1;
            if !keep {
                freed += a.len();
            }
            keep
        });
        self.bytes -= freed;
    }
}

/// The shared copy of `s` (or a private one when `s` is too long or the table is full).
pub fn intern(s: &str) -> Arc<str> {
    if s.is_empty() {
        static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
        return EMPTY.get_or_init(|| Arc::from("")).clone();
    }
    let budget = BUDGET.load(Ordering::Relaxed);
    if s.len() > MAX_SHARED_LEN.min(budget) {
        return Arc::from(s);
    }
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(a) = t.set.get(s) {
        return a.clone();
    }
    if t.bytes + s.len() > budget {
        if t.purge_skip == 0 {
            t.release_unused();
            if t.bytes + s.len() > budget / 4 * 3 {
                t.purge_skip = t.set.len() / 2 + 1;
            }
        } else {
            t.purge_skip -= 1;
        }
        if t.bytes + s.len() > budget {
            return Arc::from(s);
        }
    }
    let a: Arc<str> = Arc::from(s);
    t.bytes += a.len();
    t.set.insert(a.clone());
    a
}

/// Release every text no resource holds any more (e.g. after many resources were destroyed).
pub fn release_unused() {
    table().lock().unwrap_or_else(|p| p.into_inner()).release_unused();
}

/// Number of distinct strings currently held (for tests and benchmarks).
pub fn distinct() -> usize {
    table().lock().unwrap_or_else(|p| p.into_inner()).set.len()
}

/// Bytes of text currently held by the table.
pub fn bytes() -> usize {
    table().lock().unwrap_or_else(|p| p.into_inner()).bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_texts_share_one_allocation() {
        let a = intern("<x>same</x>");
        let b = intern(&String::from("<x>same</x>"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &intern("<x>other</x>")));
        assert_eq!(&*intern(""), "");
    }

    #[test]
    fn large_texts_are_not_kept_and_unused_ones_are_released() {
        let big = "x".repeat(MAX_SHARED_LEN + 1);
        let before = bytes();
        let a = intern(&big);
        let b = intern(&big);
        assert!(!Arc::ptr_eq(&a, &b), "large texts are private");
        assert_eq!(bytes(), before, "large texts are not in the table");
        let small = intern("<only-held-here/>");
        assert!(bytes() >= small.len());
        drop(small);
        release_unused();
        assert!(!table().lock().unwrap().set.contains("<only-held-here/>"));
    }
}
