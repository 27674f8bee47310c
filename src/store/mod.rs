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

/// A notification stream: (producer service, producer key, topic in Clark notation).
pub type StreamId = (String, String, String);

/// One committed change of a notification stream (table `notify_change`), from which each
/// subscription's Notify is built when it is delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyChange {
    /// Commit sequence, increasing over the whole store.
    pub seq: i64,
    pub stream: StreamId,
    /// The property's values before the change (None: unknown), as XML.
    pub old: Option<std::sync::Arc<str>>,
    /// The values after it (for `wsrl:ResourceTermination`: the termination time).
    pub new: std::sync::Arc<str>,
}

/// Cursor writes of one stream (table `notify_mark`: the position of every subscription of the
/// stream that has no row of its own in `notify_cursor`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotifyCursors {
    pub stream: StreamId,
    /// Some((mark, trimmed)): set the stream's mark, and the sequence up to which its changes
    /// were dropped for subscriptions too far behind (they get a resync instead); None: leave it.
    pub mark: Option<(i64, i64)>,
    /// Per subscription: Some(seq) its own position, None: it is at the mark.
    pub subs: Vec<(String, Option<i64>)>,
    /// Delete the stream's changes with a sequence up to this (delivered to every subscription).
    pub delivered: Option<i64>,
    /// The stream has no subscription any more: delete its mark and every change.
    pub drop_stream: bool,
}

/// What the notification tables hold at start-up.
#[derive(Debug, Default)]
pub struct NotifyState {
    /// In sequence order.
    pub changes: Vec<NotifyChange>,
    /// (stream, mark, trimmed), see [`NotifyCursors::mark`].
    pub marks: Vec<(StreamId, i64, i64)>,
    pub cursors: Vec<(String, i64)>,
    /// Per-subscription messages (resyncs; rows of the pre-stream format), (sub, seq, body) in
    /// sub and seq order.
    pub outbox: Vec<(String, i64, String)>,
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
    /// Queue an undelivered message of one subscription (`sub`, at position `seq` of its
    /// stream) and set its cursor to `seq` (not below what it was).
    OutboxPut {
        sub: String,
        seq: i64,
        body: String,
    },
    /// A message of `OutboxPut` was delivered (or dropped): forget it (`seq` None: everything of
    /// `sub`, its cursor included: the subscription is gone).
    OutboxDelete {
        sub: String,
        seq: Option<i64>,
    },
    /// One committed change of a notification stream (one row whatever the number of
    /// subscriptions).
    NotifyChange(NotifyChange),
    /// Delivered positions of one stream's subscriptions, and what none of them still needs.
    NotifyCursors(NotifyCursors),
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
CREATE TABLE IF NOT EXISTS notify_change (
    seq INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    topic TEXT NOT NULL,
    old TEXT,
    new TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_change_stream ON notify_change(service, key, topic, seq);
CREATE TABLE IF NOT EXISTS notify_mark (
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    trimmed INTEGER NOT NULL,
    PRIMARY KEY (service, key, topic)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notify_cursor (
    sub TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
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

    /// Queue a write without waiting for its commit: it is applied after every write submitted
    /// before it, in the WAL (not fsynced) once committed, like replay records — it survives a
    /// vwsd crash; a system crash may lose the last ones.
    fn queue(&self, op: Op) {
        let (done, _) = oneshot::channel();
        let _ = self.tx.send(Job { op, done });
    }

    /// Queue a message of subscription `sub` at position `seq` of its stream (a resync) and
    /// move its cursor to `seq`; does not wait for the commit.
    pub fn outbox_queue(&self, sub: &str, seq: i64, body: &str) {
        self.queue(Op::OutboxPut { sub: sub.into(), seq, body: body.into() });
    }

    /// Forget a queued message (None: every one of `sub`, and its cursor). Does not wait.
    pub fn outbox_delete(&self, sub: &str, seq: Option<i64>) {
        self.queue(Op::OutboxDelete { sub: sub.into(), seq });
    }

    /// Record one committed change of a notification stream; does not wait.
    pub fn notify_change(&self, change: NotifyChange) {
        self.queue(Op::NotifyChange(change));
    }

    /// Write a stream's delivered positions and delete what none of its subscriptions needs;
    /// does not wait.
    pub fn notify_cursors(&self, cursors: NotifyCursors) {
        self.queue(Op::NotifyCursors(cursors));
    }

    /// The notification tables (start-up).
    pub fn notify_state(&self) -> Result<NotifyState, StoreError> {
        let conn = Connection::open(&self.path)?;
        let mut out = NotifyState::default();
        let mut st = conn.prepare("SELECT seq, service, key, topic, old, new FROM notify_change ORDER BY seq")?;
        let rows = st.query_map([], |r| {
            Ok(NotifyChange {
                seq: r.get(0)?,
                stream: (r.get(1)?, r.get(2)?, r.get(3)?),
                old: r.get::<_, Option<String>>(4)?.map(Into::into),
                new: r.get::<_, String>(5)?.into(),
            })
        })?;
        out.changes = rows.collect::<Result<Vec<_>, _>>()?;
        let mut st = conn.prepare("SELECT service, key, topic, seq, trimmed FROM notify_mark")?;
        let rows = st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?, r.get(4)?)))?;
        out.marks = rows.collect::<Result<Vec<_>, _>>()?;
        let mut st = conn.prepare("SELECT sub, seq FROM notify_cursor")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        out.cursors = rows.collect::<Result<Vec<_>, _>>()?;
        let mut st = conn.prepare("SELECT sub, seq, body FROM outbox ORDER BY sub, seq")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        out.outbox = rows.collect::<Result<Vec<_>, _>>()?;
        Ok(out)
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
        let unsynced_only = jobs.iter().all(|j| {
            matches!(
                j.op,
                Op::Replay { .. } | Op::OutboxPut { .. } | Op::OutboxDelete { .. } | Op::NotifyChange(_) | Op::NotifyCursors(_)
            )
        });
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
                    tx.prepare_cached(
                        "INSERT INTO notify_cursor (sub, seq) VALUES (?1, ?2) ON CONFLICT(sub) DO UPDATE SET seq = max(seq, excluded.seq)",
                    )?
                    .execute(params![sub, seq])?;
                }
                Op::OutboxDelete { sub, seq: Some(seq) } => {
                    tx.prepare_cached("DELETE FROM outbox WHERE sub = ?1 AND seq = ?2")?.execute(params![sub, seq])?;
                }
                Op::OutboxDelete { sub, seq: None } => {
                    tx.prepare_cached("DELETE FROM outbox WHERE sub = ?1")?.execute(params![sub])?;
                    tx.prepare_cached("DELETE FROM notify_cursor WHERE sub = ?1")?.execute(params![sub])?;
                }
                Op::NotifyChange(c) => {
                    let (service, key, topic) = &c.stream;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO notify_change (seq, service, key, topic, old, new) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![c.seq, service, key, topic, c.old.as_deref(), &*c.new])?;
                }
                Op::NotifyCursors(c) => notify_cursors(&tx, c)?,
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

fn notify_cursors(tx: &rusqlite::Transaction, c: &NotifyCursors) -> Result<(), rusqlite::Error> {
    let (service, key, topic) = &c.stream;
    for (sub, seq) in &c.subs {
        match seq {
            Some(seq) => tx
                .prepare_cached("INSERT OR REPLACE INTO notify_cursor (sub, seq) VALUES (?1, ?2)")?
                .execute(params![sub, seq])?,
            None => tx.prepare_cached("DELETE FROM notify_cursor WHERE sub = ?1")?.execute(params![sub])?,
        };
    }
    if c.drop_stream {
        tx.prepare_cached("DELETE FROM notify_mark WHERE service = ?1 AND key = ?2 AND topic = ?3")?
            .execute(params![service, key, topic])?;
        tx.prepare_cached("DELETE FROM notify_change WHERE service = ?1 AND key = ?2 AND topic = ?3")?
            .execute(params![service, key, topic])?;
        return Ok(());
    }
    if let Some((mark, trimmed)) = c.mark {
        tx.prepare_cached("INSERT OR REPLACE INTO notify_mark (service, key, topic, seq, trimmed) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![service, key, topic, mark, trimmed])?;
    }
    if let Some(upto) = c.delivered {
        tx.prepare_cached("DELETE FROM notify_change WHERE service = ?1 AND key = ?2 AND topic = ?3 AND seq <= ?4")?
            .execute(params![service, key, topic, upto])?;
    }
    Ok(())
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
    async fn notification_changes_cursors_and_their_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id: StreamId = ("S".into(), "k".into(), "{urn:t}P".into());
        for seq in 1..=3 {
            s.notify_change(NotifyChange {
                seq,
                stream: id.clone(),
                old: (seq > 1).then(|| format!("<v>{}</v>", seq - 1).into()),
                new: format!("<v>{seq}</v>").into(),
            });
        }
        s.notify_cursors(NotifyCursors {
            stream: id.clone(),
            mark: Some((2, 0)),
            subs: vec![("a".into(), Some(1)), ("b".into(), None)],
            delivered: Some(1),
            drop_stream: false,
        });
        s.outbox_queue("c", 5, "<resync/>");
        s.put(Row { service: "X".into(), key: "sync".into(), termination_ms: None, record: "{}".into() }).await.unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let st = s.notify_state().unwrap();
        assert_eq!(st.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![2, 3], "delivered to all: deleted");
        assert_eq!(st.changes[0].old.as_deref(), Some("<v>1</v>"));
        assert_eq!(st.marks, vec![(id.clone(), 2, 0)]);
        assert_eq!(st.cursors, vec![("a".to_string(), 1), ("c".to_string(), 5)], "a resync moves the cursor with it");
        assert_eq!(st.outbox, vec![("c".to_string(), 5, "<resync/>".to_string())]);
        s.outbox_delete("c", None);
        s.notify_cursors(NotifyCursors { stream: id.clone(), drop_stream: true, ..Default::default() });
        s.put(Row { service: "X".into(), key: "sync".into(), termination_ms: None, record: "{}".into() }).await.unwrap();
        let st = s.notify_state().unwrap();
        assert!(st.changes.is_empty() && st.marks.is_empty() && st.outbox.is_empty());
        assert_eq!(st.cursors, vec![("a".to_string(), 1)]);
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
