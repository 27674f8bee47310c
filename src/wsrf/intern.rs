//! Sharing of identical strings between resources. Workspaces are mostly made from a few
//! templates (a cluster is many copies of one description), so their property values and
//! service data repeat: each distinct text is kept once and reference-counted. Entries nobody
//! else holds are purged when the table has doubled since the last purge.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

struct Table {
    set: HashSet<Arc<str>>,
    purge_at: usize,
}

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Table { set: HashSet::new(), purge_at: 1024 }))
}

/// The shared copy of `s`.
pub fn intern(s: &str) -> Arc<str> {
    if s.is_empty() {
        static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
        return EMPTY.get_or_init(|| Arc::from("")).clone();
    }
    let mut t = table().lock().unwrap();
    if let Some(a) = t.set.get(s) {
        return a.clone();
    }
    if t.set.len() >= t.purge_at {
        t.set.retain(|a| Arc::strong_count(a) > 1);
        t.purge_at = (t.set.len() * 2).max(1024);
    }
    let a: Arc<str> = Arc::from(s);
    t.set.insert(a.clone());
    a
}

/// Number of distinct strings currently held (for tests and benchmarks).
pub fn distinct() -> usize {
    table().lock().unwrap().set.len()
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
}
