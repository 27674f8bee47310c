//! The Repository's own tables, in the same SQLite file as the resources: `repo_locks` (one
//! checkout lock per workspace: holder DN, Manager EPR address, since, lease end) and
//! `repo_images` (the content store's images by SHA-256: size, owner, source, when). Every
//! change is one `BEGIN IMMEDIATE` transaction, so concurrent checkouts of one workspace have
//! exactly one winner and a crash leaves either the old or the new rows.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS repo_locks (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    manager TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_images (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    owner TEXT NOT NULL,
    source TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_catalogue (
    key TEXT PRIMARY KEY,
    epr TEXT NOT NULL,
    owner TEXT NOT NULL,
    enrolled_by TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,
    termination_ms INTEGER,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// A workspace another Manager host keeps, enrolled in this site's catalogue (remote
/// Repository, issue 12): where it lives (its EPR), whose it is, its state and description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub key: String,
    /// The workspace's EPR (XML) at the Manager host that keeps it.
    pub epr: String,
    /// Owner DN ("" when anonymous).
    pub owner: String,
    /// DN of the Manager host that enrolled it ("anonymous" without security).
    pub enrolled_by: String,
    pub state: String,
    /// The `virtualWorkspace` description (XML).
    pub description: String,
    pub termination_ms: Option<i64>,
    pub updated_ms: i64,
}

fn enrolled_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Enrolled> {
    Ok(Enrolled {
        key: r.get(0)?,
        epr: r.get(1)?,
        owner: r.get(2)?,
        enrolled_by: r.get(3)?,
        state: r.get(4)?,
        description: r.get(5)?,
        termination_ms: r.get(6)?,
        updated_ms: r.get(7)?,
    })
}

const ENROLLED_COLS: &str = "key, epr, owner, enrolled_by, state, description, termination_ms, updated_ms";

/// One checkout lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub key: String,
    /// DN of the caller that checked the workspace out ("anonymous" without security).
    pub holder: String,
    /// Address of the Manager holding it.
    pub manager: String,
    pub since_ms: i64,
    /// Lease end: past it the lock may be broken.
    pub until_ms: i64,
}

/// One image of the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRow {
    pub sha256: String,
    pub size: u64,
    pub owner: String,
    pub source: String,
    pub created_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("workspace '{}' is checked out by {} (Manager {}) since {} ms, lease until {} ms", .0.key, .0.holder, .0.manager, .0.since_ms, .0.until_ms)]
    Locked(Lock),
    #[error("workspace '{0}' is not checked out")]
    NotLocked(String),
    #[error("workspace '{key}' is checked out by {holder}, not by the caller")]
    NotHolder { key: String, holder: String },
    #[error("{scope} quota exceeded: {used} bytes used + {size} bytes new > {quota} bytes")]
    Quota { scope: String, used: u64, size: u64, quota: u64 },
    #[error("repository store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("repository store: {0}")]
    Io(#[from] std::io::Error),
}

/// Quotas of the image store (None: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    pub site_bytes: Option<u64>,
    pub owner_bytes: Option<u64>,
}

/// The Repository's tables of one store.
pub struct RepoTables {
    conn: Mutex<Connection>,
}

fn lock_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Lock> {
    Ok(Lock { key: r.get(0)?, holder: r.get(1)?, manager: r.get(2)?, since_ms: r.get(3)?, until_ms: r.get(4)? })
}

fn image_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        sha256: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        owner: r.get(2)?,
        source: r.get(3)?,
        created_ms: r.get(4)?,
    })
}

impl RepoTables {
    /// Opens the tables in `DIR/vws.db`.
    pub fn open(dir: &Path) -> Result<RepoTables, RepoError> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("vws.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "busy_timeout", 10000)?;
        conn.execute_batch(SCHEMA)?;
        Ok(RepoTables { conn: Mutex::new(conn) })
    }

    /// Checks `key` out to `holder` at `manager` until `now_ms + lease_ms`. Refused with
    /// [`RepoError::Locked`] while another lock's lease runs; a lapsed lease is broken (the
    /// broken lock is returned so the caller can log it).
    pub fn checkout(
        &self,
        key: &str,
        holder: &str,
        manager: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Lock>, RepoError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held = tx
            .query_row("SELECT key, holder, manager, since_ms, until_ms FROM repo_locks WHERE key = ?1", params![key], lock_of)
            .optional()?;
        if let Some(l) = &held {
            if l.until_ms > now_ms {
                return Err(RepoError::Locked(l.clone()));
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO repo_locks (key, holder, manager, since_ms, until_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, holder, manager, now_ms, now_ms.saturating_add(lease_ms)],
        )?;
        tx.commit()?;
        Ok(held)
    }

    /// Extends the lease of a lock `manager` holds.
    pub fn renew(&self, key: &str, manager: &str, now_ms: i64, lease_ms: i64) -> Result<Lock, RepoError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let l = tx
            .query_row("SELECT key, holder, manager, since_ms, until_ms FROM repo_locks WHERE key = ?1", params![key], lock_of)
            .optional()?
            .ok_or_else(|| RepoError::NotLocked(key.into()))?;
        if l.manager != manager {
            return Err(RepoError::NotHolder { key: key.into(), holder: format!("{} (Manager {})", l.holder, l.manager) });
        }
        let until = now_ms.saturating_add(lease_ms);
        tx.execute("UPDATE repo_locks SET until_ms = ?2 WHERE key = ?1", params![key, until])?;
        tx.commit()?;
        Ok(Lock { until_ms: until, ..l })
    }

    /// Extends every lease `manager` holds; returns how many.
    pub fn renew_all(&self, manager: &str, now_ms: i64, lease_ms: i64) -> Result<usize, RepoError> {
        let conn = self.conn.lock().unwrap();
        Ok(conn.execute(
            "UPDATE repo_locks SET until_ms = ?2 WHERE manager = ?1",
            params![manager, now_ms.saturating_add(lease_ms)],
        )?)
    }

    /// Releases a lock; `manager` Some: only when that Manager holds it. Returns the lock.
    pub fn release(&self, key: &str, manager: Option<&str>) -> Result<Lock, RepoError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let l = tx
            .query_row("SELECT key, holder, manager, since_ms, until_ms FROM repo_locks WHERE key = ?1", params![key], lock_of)
            .optional()?
            .ok_or_else(|| RepoError::NotLocked(key.into()))?;
        if let Some(m) = manager {
            if l.manager != m {
                return Err(RepoError::NotHolder { key: key.into(), holder: format!("{} (Manager {})", l.holder, l.manager) });
            }
        }
        tx.execute("DELETE FROM repo_locks WHERE key = ?1", params![key])?;
        tx.commit()?;
        Ok(l)
    }

    pub fn lock(&self, key: &str) -> Result<Option<Lock>, RepoError> {
        let conn = self.conn.lock().unwrap();
        Ok(conn
            .query_row("SELECT key, holder, manager, since_ms, until_ms FROM repo_locks WHERE key = ?1", params![key], lock_of)
            .optional()?)
    }

    pub fn locks(&self) -> Result<Vec<Lock>, RepoError> {
        let conn = self.conn.lock().unwrap();
        let mut st = conn.prepare("SELECT key, holder, manager, since_ms, until_ms FROM repo_locks ORDER BY since_ms")?;
        let rows = st.query_map([], lock_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops the lock of a workspace that is gone.
    pub fn forget(&self, key: &str) -> Result<(), RepoError> {
        let conn = self.conn.lock().unwrap();
        conn.execute("DELETE FROM repo_locks WHERE key = ?1", params![key])?;
        Ok(())
    }

    // --- workspaces of other Manager hosts ---------------------------------------------------

    /// Enrols (or updates) a workspace another host keeps. Refused with
    /// [`RepoError::NotHolder`] when another host enrolled the key.
    pub fn enrol(&self, e: &Enrolled) -> Result<(), RepoError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let by: Option<String> =
            tx.query_row("SELECT enrolled_by FROM repo_catalogue WHERE key = ?1", params![e.key], |r| r.get(0)).optional()?;
        if let Some(by) = by.filter(|b| *b != e.enrolled_by) {
            return Err(RepoError::NotHolder { key: e.key.clone(), holder: format!("enrolled by {by}") });
        }
        tx.execute(
            &format!("INSERT OR REPLACE INTO repo_catalogue ({ENROLLED_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![e.key, e.epr, e.owner, e.enrolled_by, e.state, e.description, e.termination_ms, e.updated_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an enrolled workspace (and its lock); false when it was not enrolled.
    pub fn withdraw(&self, key: &str) -> Result<bool, RepoError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute("DELETE FROM repo_catalogue WHERE key = ?1", params![key])?;
        tx.execute("DELETE FROM repo_locks WHERE key = ?1", params![key])?;
        tx.commit()?;
        Ok(n > 0)
    }

    pub fn enrolled(&self, key: &str) -> Result<Option<Enrolled>, RepoError> {
        let conn = self.conn.lock().unwrap();
        Ok(conn
            .query_row(&format!("SELECT {ENROLLED_COLS} FROM repo_catalogue WHERE key = ?1"), params![key], enrolled_of)
            .optional()?)
    }

    /// Every enrolled workspace.
    pub fn enrolled_all(&self) -> Result<Vec<Enrolled>, RepoError> {
        let conn = self.conn.lock().unwrap();
        let mut st = conn.prepare_cached(&format!("SELECT {ENROLLED_COLS} FROM repo_catalogue"))?;
        let rows = st.query_map([], enrolled_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // --- images ---------------------------------------------------------------------------

    pub fn image(&self, sha256: &str) -> Result<Option<ImageRow>, RepoError> {
        let conn = self.conn.lock().unwrap();
        Ok(conn
            .query_row(
                "SELECT sha256, size, owner, source, created_ms FROM repo_images WHERE sha256 = ?1",
                params![sha256],
                image_of,
            )
            .optional()?)
    }

    pub fn images(&self) -> Result<Vec<ImageRow>, RepoError> {
        let conn = self.conn.lock().unwrap();
        let mut st = conn.prepare("SELECT sha256, size, owner, source, created_ms FROM repo_images ORDER BY created_ms")?;
        let rows = st.query_map([], image_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Bytes used: (whole site, by `owner`).
    pub fn usage(&self, owner: &str) -> Result<(u64, u64), RepoError> {
        let conn = self.conn.lock().unwrap();
        let site: i64 = conn.query_row("SELECT COALESCE(SUM(size), 0) FROM repo_images", [], |r| r.get(0))?;
        let mine: i64 =
            conn.query_row("SELECT COALESCE(SUM(size), 0) FROM repo_images WHERE owner = ?1", params![owner], |r| r.get(0))?;
        Ok((site as u64, mine as u64))
    }

    /// Would `size` more bytes of `owner` fit the quotas?
    pub fn check_quota(&self, owner: &str, size: u64, q: Quotas) -> Result<(), RepoError> {
        let (site, mine) = self.usage(owner)?;
        if let Some(quota) = q.site_bytes {
            if site.saturating_add(size) > quota {
                return Err(RepoError::Quota { scope: "site".into(), used: site, size, quota });
            }
        }
        if let Some(quota) = q.owner_bytes {
            if mine.saturating_add(size) > quota {
                return Err(RepoError::Quota { scope: format!("owner {owner}"), used: mine, size, quota });
            }
        }
        Ok(())
    }

    /// Records an image (quotas checked in the same transaction). `Ok(false)`: it was there.
    pub fn add_image(&self, img: &ImageRow, q: Quotas) -> Result<bool, RepoError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool =
            tx.query_row("SELECT 1 FROM repo_images WHERE sha256 = ?1", params![img.sha256], |_| Ok(())).optional()?.is_some();
        if exists {
            return Ok(false);
        }
        let site: i64 = tx.query_row("SELECT COALESCE(SUM(size), 0) FROM repo_images", [], |r| r.get(0))?;
        let mine: i64 =
            tx.query_row("SELECT COALESCE(SUM(size), 0) FROM repo_images WHERE owner = ?1", params![img.owner], |r| r.get(0))?;
        if let Some(quota) = q.site_bytes {
            if site as u64 + img.size > quota {
                return Err(RepoError::Quota { scope: "site".into(), used: site as u64, size: img.size, quota });
            }
        }
        if let Some(quota) = q.owner_bytes {
            if mine as u64 + img.size > quota {
                return Err(RepoError::Quota { scope: format!("owner {}", img.owner), used: mine as u64, size: img.size, quota });
            }
        }
        tx.execute(
            "INSERT INTO repo_images (sha256, size, owner, source, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![img.sha256, img.size as i64, img.owner, img.source, img.created_ms],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes an image's row.
    pub fn remove_image(&self, sha256: &str) -> Result<bool, RepoError> {
        let conn = self.conn.lock().unwrap();
        Ok(conn.execute("DELETE FROM repo_images WHERE sha256 = ?1", params![sha256])? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_checkout_wins_lapsed_leases_break_and_locks_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::sync::Arc::new(RepoTables::open(dir.path()).unwrap());
        let wins: usize = (0..20)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || t.checkout("w", &format!("dn{i}"), "m", 1000, 500).is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap() as usize)
            .sum();
        assert_eq!(wins, 1);
        let l = t.lock("w").unwrap().unwrap();
        assert!(matches!(t.checkout("w", "x", "m2", 1400, 500), Err(RepoError::Locked(ref h)) if h.holder == l.holder));
        assert!(matches!(t.renew("w", "m2", 1400, 500), Err(RepoError::NotHolder { .. })));
        assert_eq!(t.renew("w", "m", 1400, 500).unwrap().until_ms, 1900);
        let broken = t.checkout("w", "x", "m2", 2000, 500).unwrap().unwrap();
        assert_eq!(broken.holder, l.holder, "the lapsed lock is broken and returned");
        drop(t);
        let t = RepoTables::open(dir.path()).unwrap();
        assert_eq!(t.lock("w").unwrap().unwrap().manager, "m2");
        assert!(t.release("w", Some("m")).is_err());
        t.release("w", Some("m2")).unwrap();
        assert!(t.lock("w").unwrap().is_none());
    }

    #[test]
    fn images_dedupe_and_quotas() {
        let dir = tempfile::tempdir().unwrap();
        let t = RepoTables::open(dir.path()).unwrap();
        let q = Quotas { site_bytes: Some(100), owner_bytes: Some(60) };
        let img = |h: &str, size, owner: &str| ImageRow {
            sha256: h.into(),
            size,
            owner: owner.into(),
            source: "file:///x".into(),
            created_ms: 1,
        };
        assert!(t.add_image(&img("a", 50, "o1"), q).unwrap());
        assert!(!t.add_image(&img("a", 50, "o2"), q).unwrap(), "present: no second row");
        assert!(matches!(t.add_image(&img("b", 20, "o1"), q), Err(RepoError::Quota { ref scope, .. }) if scope == "owner o1"));
        assert!(t.add_image(&img("b", 40, "o2"), q).unwrap());
        assert!(matches!(t.add_image(&img("c", 20, "o3"), q), Err(RepoError::Quota { ref scope, .. }) if scope == "site"));
        assert_eq!(t.usage("o1").unwrap(), (90, 50));
        assert!(t.remove_image("a").unwrap());
        assert_eq!(t.images().unwrap().len(), 1);
    }
}
