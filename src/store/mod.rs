//! Durable storage of WS-Resources in embedded SQLite (WAL, `synchronous=FULL`).
//!
//! One writer thread owns the connection and commits writes in groups: every write waiting when
//! a transaction starts goes into it, and each caller is answered only after the commit (and
//! its fsync) returned. Concurrent clients therefore share fsyncs, while every acknowledged write
//! is on disk. A crash at any point leaves either the old or the new row, never a partial one.

pub mod leases;
pub mod repo;

use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store is closed")]
    Closed,
    #[error("store commit failed: {0}")]
    Commit(String),
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// One stored resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub service: String,
    pub key: String,
    /// Termination time in ms since the Unix epoch; None = never.
    pub termination_ms: Option<i64>,
    /// The resource's serialized state (JSON written by the resource home).
    pub record: String,
}

enum Op {
    Put(Row),
    Delete {
        service: String,
        key: String,
    },
    /// Checkpoint the WAL into the database file (at shutdown).
    Checkpoint,
    /// Queue an undelivered notification (`sub`, `seq`) with its message.
    OutboxPut {
        sub: String,
        seq: i64,
        body: String,
    },
    /// A notification was delivered (or dropped): forget it (`seq` None: all of `sub`'s).
    OutboxDelete {
        sub: String,
        seq: Option<i64>,
    },
    /// Remember a signed message (its replay key) until `end_ms`; answers `false` when it was
    /// already remembered. Rows past their end are pruned in the same transaction.
    Replay {
        key: String,
        end_ms: i64,
        now_ms: i64,
    },
}

struct Job {
    op: Op,
    /// `Ok(true)` when the operation changed something (for `Replay`: the key was new).
    done: oneshot::Sender<Result<bool, String>>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    path: PathBuf,
    replay_may_be_lost: bool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    termination_ms INTEGER,
    record TEXT NOT NULL,
    PRIMARY KEY (service, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resources_termination ON resources(termination_ms) WHERE termination_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS replay (
    key TEXT PRIMARY KEY,
    end_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replay_end ON replay(end_ms);
CREATE TABLE IF NOT EXISTS outbox (
    sub TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (sub, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// This boot of the operating system (Linux: `/proc/sys/kernel/random/boot_id`); None elsewhere.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

fn meta(conn: &Connection, name: &str) -> Result<Option<String>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", params![name], |r| r.get(0)).optional()
}

fn set_meta(conn: &Connection, name: &str, value: &str) -> Result<(), rusqlite::Error> {
    conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)", params![name, value]).map(drop)
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

impl Store {
    /// Open (creating if needed) `DIR/vws.db` and start the writer thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("vws.db");
        let conn = open_conn(&path)?;
        // Replay records are committed without an fsync: a system crash (not a vwsd crash) may
        // lose the last ones. That can only have happened when the system rebooted since the
        // store was last opened and the store was not closed cleanly (its WAL synced) before.
        let boot = boot_id();
        let clean = meta(&conn, "replay_synced")?.is_none_or(|v| v == "1");
        let same_boot = boot.is_some() && meta(&conn, "boot_id")? == boot;
        let replay_may_be_lost = !clean && !same_boot;
        set_meta(&conn, "boot_id", boot.as_deref().unwrap_or("-"))?;
        set_meta(&conn, "replay_synced", "0")?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("vws-store".into()).spawn(move || writer(conn, rx))?;
        Ok(Store { tx, path, replay_may_be_lost })
    }

    /// Whether replay records of the last run may have been lost: the system crashed (or lost
    /// power) while vwsd ran, since the store was opened in an earlier boot and not closed
    /// cleanly. The caller must then refuse signed messages that could have been accepted
    /// before the crash (see `app::durable_replay_cache`).
    pub fn replay_may_be_lost(&self) -> bool {
        self.replay_may_be_lost
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every row of a service (tests, tools).
    pub fn load(&self, service: &str) -> Result<Vec<Row>, StoreError> {
        let mut rows = Vec::new();
        self.for_each(service, |r| rows.push(r))?;
        Ok(rows)
    }

    /// Visit every row of a service, one at a time (start-up: no second copy of the store in
    /// memory). Returns the number of rows.
    pub fn for_each(&self, service: &str, mut f: impl FnMut(Row)) -> Result<usize, StoreError> {
        let conn = Connection::open(&self.path)?;
        let mut st = conn.prepare("SELECT key, termination_ms, record FROM resources WHERE service = ?1")?;
        let mut rows = st.query(params![service])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            f(Row { service: service.to_string(), key: r.get(0)?, termination_ms: r.get(1)?, record: r.get(2)? });
            n += 1;
        }
        Ok(n)
    }

    /// Read one row directly from disk (tests, tools).
    pub fn get(&self, service: &str, key: &str) -> Result<Option<Row>, StoreError> {
        let conn = Connection::open(&self.path)?;
        Ok(conn
            .query_row(
                "SELECT termination_ms, record FROM resources WHERE service = ?1 AND key = ?2",
                params![service, key],
                |r| Ok(Row { service: service.into(), key: key.into(), termination_ms: r.get(0)?, record: r.get(1)? }),
            )
            .optional()?)
    }

    async fn submit(&self, op: Op) -> Result<bool, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Job { op, done }).map_err(|_| StoreError::Closed)?;
        match rx.await {
            Ok(Ok(changed)) => Ok(changed),
            Ok(Err(msg)) => Err(StoreError::Commit(msg)),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Insert or replace a row; returns once it is committed.
    pub async fn put(&self, row: Row) -> Result<(), StoreError> {
        self.submit(Op::Put(row)).await.map(drop)
    }

    /// Flush the write-ahead log into the database file; used at shutdown.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.submit(Op::Checkpoint).await.map(drop)
    }

    /// Delete a row; returns once the deletion is committed.
    pub async fn delete(&self, service: &str, key: &str) -> Result<(), StoreError> {
        self.submit(Op::Delete { service: service.into(), key: key.into() }).await.map(drop)
    }

    /// Remember a signed message's replay key until `end_ms` (group-committed like every write).
    /// `Ok(false)`: the key was already remembered, i.e. the message is a replay.
    ///
    /// Durability: the record is in the WAL (written, not fsynced: `synchronous=NORMAL` for a
    /// group of replay records only) when this returns, so it survives a vwsd crash (kill -9)
    /// at once; it survives a system crash or power loss once the WAL is next synced — by any
    /// other write, a checkpoint or a clean shutdown. What a system crash may lose is covered by
    /// [`Store::replay_may_be_lost`] at the next start.
    pub async fn record_replay(&self, key: &str, end_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.submit(Op::Replay { key: key.into(), end_ms, now_ms }).await
    }

    /// Queue a notification message of subscription `sub` (number `seq`, increasing), in the
    /// WAL when this returns (like replay records: it survives a vwsd crash; a system crash may
    /// lose the last ones).
    pub async fn outbox_put(&self, sub: &str, seq: i64, body: &str) -> Result<(), StoreError> {
        self.submit(Op::OutboxPut { sub: sub.into(), seq, body: body.into() }).await.map(drop)
    }

    /// [`Store::outbox_put`] without waiting for the commit (queued behind the writes submitted
    /// before it, so a later [`Store::outbox_delete`] of it is applied after it).
    pub fn outbox_queue(&self, sub: &str, seq: i64, body: &str) {
        let (done, _) = oneshot::channel();
        let _ = self.tx.send(Job { op: Op::OutboxPut { sub: sub.into(), seq, body: body.into() }, done });
    }

    /// Forget a queued notification (None: every one of `sub`). Queued behind the writes
    /// submitted before it; does not wait for the commit.
    pub fn outbox_delete(&self, sub: &str, seq: Option<i64>) {
        let (done, _) = oneshot::channel();
        let _ = self.tx.send(Job { op: Op::OutboxDelete { sub: sub.into(), seq }, done });
    }

    /// The queued notifications of every subscription, (sub, seq, body) in sub and seq order.
    pub fn outbox(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        let conn = Connection::open(&self.path)?;
        let mut st = conn.prepare("SELECT sub, seq, body FROM outbox ORDER BY sub, seq")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The replay keys still inside their window at `now_ms` (start-up), oldest end first.
    pub fn replay_keys(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = Connection::open(&self.path)?;
        let mut st = conn.prepare("SELECT key, end_ms FROM replay WHERE end_ms >= ?1 ORDER BY end_ms")?;
        let rows = st.query_map(params![now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

const MAX_GROUP: usize = 512;

fn writer(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    let mut synchronous = "FULL";
    let mut marked_clean = false;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // Replay records and the notification outbox alone are committed without an fsync (see
        // [`Store::record_replay`]); any other write syncs the WAL, and every record before it.
        let unsynced_only =
            jobs.iter().all(|j| matches!(j.op, Op::Replay { .. } | Op::OutboxPut { .. } | Op::OutboxDelete { .. }));
        // After a clean-shutdown mark, the first group clears it durably.
        let sync = if unsynced_only && !marked_clean { "NORMAL" } else { "FULL" };
        if sync != synchronous {
            if let Err(e) = conn.pragma_update(None, "synchronous", sync) {
                tracing::error!(error = %e, "store: cannot set synchronous={sync}");
            }
            synchronous = sync;
        }
        if marked_clean {
            match set_meta(&conn, "replay_synced", "0") {
                Ok(()) => marked_clean = false,
                Err(e) => tracing::error!(error = %e, "store: cannot clear the clean-shutdown mark"),
            }
        }
        let t0 = std::time::Instant::now();
        let mut result = commit(&mut conn, &jobs).map_err(|e| e.to_string());
        metrics::histogram!("vws_store_commit_seconds").record(t0.elapsed().as_secs_f64());
        metrics::histogram!("vws_store_commit_writes").record(jobs.len() as f64);
        if result.is_ok() && jobs.iter().any(|j| matches!(j.op, Op::Checkpoint)) {
            // The mark first (its FULL commit syncs every record before it), then the checkpoint,
            // so the mark is not left behind in a WAL the checkpoint was meant to empty.
            marked_clean = mark_clean(&conn, &mut synchronous);
            result = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE").map(|_| Vec::new()).map_err(|e| e.to_string());
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = jobs.len(), "store commit failed; writes not applied");
        }
        for (i, j) in jobs.into_iter().enumerate() {
            let r = match &result {
                Ok(changed) => Ok(changed.get(i).copied().unwrap_or(true)),
                Err(e) => Err(e.clone()),
            };
            let _ = j.done.send(r);
        }
    }
    // All senders gone: mark the clean shutdown, then checkpoint so the database file is
    // self-contained (and the WAL empty).
    mark_clean(&conn, &mut synchronous);
    if let Err(e) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::warn!(error = %e, "store: checkpoint at close failed (the WAL is replayed at the next open)");
    }
    tracing::debug!("store writer closed");
}

/// Everything is synced: note it, durably, for [`Store::replay_may_be_lost`] (a FULL commit
/// syncs the WAL, and with it every commit before it).
fn mark_clean(conn: &Connection, synchronous: &mut &'static str) -> bool {
    let r = conn.pragma_update(None, "synchronous", "FULL").and_then(|_| set_meta(conn, "replay_synced", "1"));
    *synchronous = "FULL";
    r.is_ok()
}

/// One transaction for a group of jobs; per job, whether it changed something.
fn commit(conn: &mut Connection, jobs: &[Job]) -> Result<Vec<bool>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut changed = vec![true; jobs.len()];
    {
        let mut replay = None;
        let mut pruned = false;
        let mut put =
            tx.prepare_cached("INSERT OR REPLACE INTO resources (service, key, termination_ms, record) VALUES (?1, ?2, ?3, ?4)")?;
        let mut del = tx.prepare_cached("DELETE FROM resources WHERE service = ?1 AND key = ?2")?;
        for (i, j) in jobs.iter().enumerate() {
            match &j.op {
                Op::Put(r) => {
                    put.execute(params![r.service, r.key, r.termination_ms, r.record])?;
                }
                Op::Delete { service, key } => {
                    del.execute(params![service, key])?;
                }
                Op::Checkpoint => {}
                Op::OutboxPut { sub, seq, body } => {
                    tx.prepare_cached("INSERT OR REPLACE INTO outbox (sub, seq, body) VALUES (?1, ?2, ?3)")?
                        .execute(params![sub, seq, body])?;
                }
                Op::OutboxDelete { sub, seq: Some(seq) } => {
                    tx.prepare_cached("DELETE FROM outbox WHERE sub = ?1 AND seq = ?2")?.execute(params![sub, seq])?;
                }
                Op::OutboxDelete { sub, seq: None } => {
                    tx.prepare_cached("DELETE FROM outbox WHERE sub = ?1")?.execute(params![sub])?;
                }
                Op::Replay { key, end_ms, now_ms } => {
                    if !pruned {
                        tx.prepare_cached("DELETE FROM replay WHERE end_ms < ?1")?.execute(params![now_ms])?;
                        pruned = true;
                    }
                    let st = match &mut replay {
                        Some(st) => st,
                        None => replay.insert(tx.prepare_cached("INSERT OR IGNORE INTO replay (key, end_ms) VALUES (?1, ?2)")?),
                    };
                    changed[i] = st.execute(params![key, end_ms])? == 1;
                }
            }
        }
    }
    tx.commit()?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_delete_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let row = Row { service: "S".into(), key: "k1".into(), termination_ms: Some(5), record: "{}".into() };
        s.put(row.clone()).await.unwrap();
        s.put(Row { key: "k2".into(), termination_ms: None, ..row.clone() }).await.unwrap();
        s.delete("S", "k2").await.unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load("S").unwrap(), vec![row.clone()]);
        assert_eq!(s.get("S", "k1").unwrap(), Some(row));
        assert_eq!(s.get("S", "k2").unwrap(), None);
        assert!(s.load("other").unwrap().is_empty());
    }

    #[tokio::test]
    async fn replay_keys_are_durable_once_and_pruned_after_their_window() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s.record_replay("a", 100, 0).await.unwrap());
        assert!(!s.record_replay("a", 100, 0).await.unwrap(), "second time: a replay");
        assert!(s.record_replay("b", 300, 0).await.unwrap());
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.replay_keys(50).unwrap(), vec![("a".to_string(), 100), ("b".to_string(), 300)]);
        assert!(!s.record_replay("b", 300, 200).await.unwrap());
        // "a" ended at 100: pruned by the write at 200.
        assert_eq!(s.replay_keys(0).unwrap(), vec![("b".to_string(), 300)]);
    }

    #[tokio::test]
    async fn concurrent_writes_are_grouped_and_all_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.put(Row { service: "S".into(), key: format!("{i}"), termination_ms: None, record: "{}".into() }).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(s.load("S").unwrap().len(), 200);
    }
}
