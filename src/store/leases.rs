//! Network address leases of this host's workspaces, in the same SQLite file as the resources
//! (table `leases`: one IP per workspace holding one, table `macs`: one MAC per workspace for its
//! whole life). Allocation is one `BEGIN IMMEDIATE` transaction, so concurrent deploys never get
//! the same address; an address is released only by an explicit call, which the engine makes
//! after the hypervisor confirmed the VM is gone (Nimbus #101).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (
    ip TEXT PRIMARY KEY,
    owner TEXT NOT NULL UNIQUE,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS macs (
    owner TEXT PRIMARY KEY,
    mac TEXT NOT NULL UNIQUE
) WITHOUT ROWID;
";

/// An allocated address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the address pool {first}-{last} is exhausted ({size} addresses, all leased)")]
    Exhausted { first: Ipv4Addr, last: Ipv4Addr, size: u32 },
    #[error("address store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The lease table of one store.
pub struct Leases {
    conn: Mutex<Connection>,
    first: Ipv4Addr,
    last: Ipv4Addr,
    mac_prefix: [u8; 3],
}

impl Leases {
    /// Opens the tables in `DIR/vws.db` for addresses `first..=last`.
    pub fn open(dir: &Path, first: Ipv4Addr, last: Ipv4Addr, mac_prefix: [u8; 3]) -> Result<Leases, LeaseError> {
        let conn = Connection::open(dir.join("vws.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "busy_timeout", 10000)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Leases { conn: Mutex::new(conn), first, last, mac_prefix })
    }

    fn size(&self) -> u32 {
        u32::from(self.last).saturating_sub(u32::from(self.first)) + 1
    }

    /// The workspace's address: the one it holds, else the lowest free one in the range (and its
    /// MAC, made once per workspace). Atomic: one transaction.
    pub fn allocate(&self, owner: &str) -> Result<Lease, LeaseError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mac =
            match tx.query_row("SELECT mac FROM macs WHERE owner = ?1", params![owner], |r| r.get::<_, String>(0)).optional()? {
                Some(m) => m,
                None => loop {
                    let b: [u8; 3] = rand::random();
                    let p = self.mac_prefix;
                    // Locally administered, unicast when the prefix is the QEMU one; kept as given otherwise.
                    let m = format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", p[0], p[1], p[2], b[0], b[1], b[2]);
                    if tx.execute("INSERT OR IGNORE INTO macs (owner, mac) VALUES (?1, ?2)", params![owner, m])? == 1 {
                        break m;
                    }
                },
            };
        let held: Option<String> =
            tx.query_row("SELECT ip FROM leases WHERE owner = ?1", params![owner], |r| r.get(0)).optional()?;
        let ip = match held.and_then(|s| s.parse::<Ipv4Addr>().ok()) {
            Some(ip) => ip,
            None => {
                let used: std::collections::HashSet<u32> = {
                    let mut st = tx.prepare("SELECT ip FROM leases")?;
                    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
                    rows.filter_map(|r| r.ok()?.parse::<Ipv4Addr>().ok().map(u32::from)).collect()
                };
                let free = (u32::from(self.first)..=u32::from(self.last)).find(|a| !used.contains(a));
                let Some(a) = free else {
                    return Err(LeaseError::Exhausted { first: self.first, last: self.last, size: self.size() });
                };
                let ip = Ipv4Addr::from(a);
                tx.execute(
                    "INSERT INTO leases (ip, owner, since_ms) VALUES (?1, ?2, ?3)",
                    params![ip.to_string(), owner, now_ms()],
                )?;
                ip
            }
        };
        tx.commit()?;
        Ok(Lease { ip, mac })
    }

    /// The address a workspace holds.
    pub fn get(&self, owner: &str) -> Result<Option<Lease>, LeaseError> {
        let conn = self.conn.lock().unwrap();
        let r = conn
            .query_row(
                "SELECT l.ip, m.mac FROM leases l JOIN macs m ON m.owner = l.owner WHERE l.owner = ?1",
                params![owner],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?;
        Ok(r.and_then(|(ip, mac)| Some(Lease { ip: ip.parse().ok()?, mac })))
    }

    /// The MAC of a workspace, if it ever had one.
    pub fn mac(&self, owner: &str) -> Result<Option<String>, LeaseError> {
        let conn = self.conn.lock().unwrap();
        Ok(conn.query_row("SELECT mac FROM macs WHERE owner = ?1", params![owner], |r| r.get(0)).optional()?)
    }

    /// Returns a workspace's address to the pool (only once its VM is confirmed gone).
    pub fn release(&self, owner: &str) -> Result<bool, LeaseError> {
        let conn = self.conn.lock().unwrap();
        Ok(conn.execute("DELETE FROM leases WHERE owner = ?1", params![owner])? > 0)
    }

    /// Forgets a destroyed workspace: its address (if still held) and its MAC.
    pub fn forget(&self, owner: &str) -> Result<(), LeaseError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM leases WHERE owner = ?1", params![owner])?;
        tx.execute("DELETE FROM macs WHERE owner = ?1", params![owner])?;
        tx.commit()?;
        Ok(())
    }

    /// Every lease: (owner, ip).
    pub fn all(&self) -> Result<Vec<(String, Ipv4Addr)>, LeaseError> {
        let conn = self.conn.lock().unwrap();
        let mut st = conn.prepare("SELECT owner, ip FROM leases ORDER BY ip")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.filter_map(|r| r.ok()).filter_map(|(o, ip)| Some((o, ip.parse().ok()?))).collect())
    }

    /// The pool's range and how many of its addresses are leased.
    pub fn usage(&self) -> Result<(Ipv4Addr, Ipv4Addr, u32, u32), LeaseError> {
        let conn = self.conn.lock().unwrap();
        let used: u32 = conn.query_row("SELECT COUNT(*) FROM leases", [], |r| r.get(0))?;
        Ok((self.first, self.last, used, self.size()))
    }

    /// Owners with a MAC (every workspace that was ever deployed and not yet forgotten).
    pub fn mac_owners(&self) -> Result<Vec<String>, LeaseError> {
        let conn = self.conn.lock().unwrap();
        let mut st = conn.prepare("SELECT owner FROM macs")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| r.ok()).collect())
    }
}

/// Milliseconds since the Unix epoch (when a lease was taken).
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases(dir: &Path, n: u8) -> Leases {
        Leases::open(dir, Ipv4Addr::new(10, 20, 0, 10), Ipv4Addr::new(10, 20, 0, 9 + n), [0x52, 0x54, 0x00]).unwrap()
    }

    #[test]
    fn allocation_is_stable_exhausts_and_frees_only_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let l = leases(dir.path(), 2);
        let a = l.allocate("a").unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 20, 0, 10));
        assert!(a.mac.starts_with("52:54:00:"));
        assert_eq!(l.allocate("a").unwrap(), a, "idempotent");
        let b = l.allocate("b").unwrap();
        assert_eq!(b.ip, Ipv4Addr::new(10, 20, 0, 11));
        assert_ne!(a.mac, b.mac);
        let e = l.allocate("c").unwrap_err();
        assert!(e.to_string().contains("exhausted"), "{e}");
        assert!(l.release("a").unwrap());
        assert_eq!(l.get("a").unwrap(), None);
        assert_eq!(l.mac("a").unwrap().as_deref(), Some(a.mac.as_str()), "the MAC stays with the workspace");
        let c = l.allocate("c").unwrap();
        assert_eq!(c.ip, a.ip);
        let a2 = l.allocate("a").unwrap_err();
        assert!(matches!(a2, LeaseError::Exhausted { .. }));
        l.forget("b").unwrap();
        assert_eq!(l.allocate("a").unwrap(), Lease { ip: b.ip, mac: a.mac.clone() }, "same MAC after a redeploy");
        drop(l);
        let l = leases(dir.path(), 2);
        assert_eq!(l.all().unwrap().len(), 2, "durable");
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let l = std::sync::Arc::new(leases(dir.path(), 20));
        let handles: Vec<_> = (0..60)
            .map(|i| {
                let l = l.clone();
                std::thread::spawn(move || l.allocate(&format!("w{i}")).ok())
            })
            .collect();
        let got: Vec<Lease> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
        assert_eq!(got.len(), 20);
        let ips: std::collections::HashSet<_> = got.iter().map(|l| l.ip).collect();
        assert_eq!(ips.len(), 20);
    }
}
