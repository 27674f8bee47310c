//! Bounded XPath evaluation for QueryResourceProperties: every query gets a budget of libxml2
//! XPath operations (`xmlXPathContext.opLimit`, libxml2 ≥ 2.9.11) and a wall-clock limit, runs on
//! this module's own threads (never tokio's blocking pool, which staging and shutdown need),
//! at most `max_concurrent` at once and `max_per_caller` per caller, and is cancelled when the
//! request that asked for it goes away (client disconnected, deadline passed): the evaluation
//! is stopped at its next operation. Hitting a limit is a `QueryEvaluationErrorFault` saying
//! which limit.
//!
//! Cancellation: libxml2 checks `opCount` against `opLimit` before every operation; lowering
//! `opLimit` to 1 from another thread makes the next check fail. The context pointer is only
//! touched under a lock that the evaluating thread takes before freeing the context.

use super::faults::{BaseFault, FaultType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// The limits of QueryResourceProperties (`[limits]` xpath_* in `conf/vwsd.toml`).
#[derive(Clone, Debug, PartialEq)]
pub struct QueryLimits {
    /// libxml2 XPath operations one query may perform.
    pub op_limit: u64,
    /// Wall-clock limit of one query, waiting for a free slot included.
    pub timeout: Duration,
    /// Queries evaluated at once (threads of the query pool).
    pub max_concurrent: usize,
    /// Queries of one caller (DN, or all anonymous callers together) evaluated or waiting at once.
    pub max_per_caller: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { op_limit: 10_000_000, timeout: Duration::from_millis(2000), max_concurrent: 4, max_per_caller: 2 }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The query threads and the counters that bound them.
struct Pool {
    limits: QueryLimits,
    slots: Arc<Semaphore>,
    jobs: Mutex<mpsc::Sender<Job>>,
    callers: Arc<Mutex<HashMap<String, usize>>>,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Set the limits (once, before the first query; later calls are ignored and return false).
pub fn configure(limits: QueryLimits) -> bool {
    let mut fresh = false;
    POOL.get_or_init(|| {
        fresh = true;
        Pool::start(limits)
    });
    fresh
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| Pool::start(QueryLimits::default()))
}

impl Pool {
    fn start(mut limits: QueryLimits) -> Pool {
        limits.max_concurrent = limits.max_concurrent.max(1);
        limits.max_per_caller = limits.max_per_caller.max(1);
        limits.op_limit = limits.op_limit.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..limits.max_concurrent {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("vws-xpath-{i}")).spawn(move || loop {
                let job = match rx.lock() {
                    Ok(r) => r.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an XPath query thread");
            }
        }
        Pool {
            slots: Arc::new(Semaphore::new(limits.max_concurrent)),
            limits,
            jobs: Mutex::new(tx),
            callers: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// One caller's place in the per-caller count, given back when the evaluation really ended.
struct CallerSlot {
    callers: Arc<Mutex<HashMap<String, usize>>>,
    who: String,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut m = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.who) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.who);
            }
        }
    }
}

/// The evaluating thread's context, reachable for cancellation while it runs.
#[derive(Default)]
struct Cancel {
    cancelled: AtomicBool,
    ctx: Mutex<Option<usize>>,
}

impl Cancel {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        let g = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = *g {
            let ctx = p as libxml::bindings::xmlXPathContextPtr;
            // SAFETY: the evaluating thread clears `ctx` under this lock before freeing the
            // context, so it is alive. The store races with libxml2's unsynchronised read of
            // the same aligned word: the reader sees the old or the new limit, either is fine.
            unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*ctx).opLimit), 1) };
        }
    }
}

/// Cancels the evaluation when the request future is dropped (or finished: then a no-op).
struct CancelOnDrop(Arc<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn limit_fault(msg: String) -> BaseFault {
    BaseFault::new(FaultType::QueryEvaluationError, msg)
}

/// Evaluate `expr` (prefixes from `scope`) against the document `doc_xml` for `caller`, within
/// the configured limits. Dropping the returned future cancels the evaluation.
pub async fn evaluate(caller: &str, doc_xml: String, expr: String, scope: Vec<(String, String)>) -> Result<String, BaseFault> {
    let p = pool();
    let limits = p.limits.clone();
    let who = caller.to_string();
    let slot = {
        let mut m = p.callers.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(who.clone()).or_insert(0);
        if *n >= limits.max_per_caller {
            tracing::warn!(caller = %who, limit = limits.max_per_caller, "XPath query refused: too many from this caller");
            return Err(limit_fault(format!(
                "too many concurrent queries from {who}: at most {} at once; retry when one has finished",
                limits.max_per_caller
            )));
        }
        *n += 1;
        CallerSlot { callers: p.callers.clone(), who: who.clone() }
    };
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let permit: OwnedSemaphorePermit = match tokio::time::timeout_at(deadline, p.slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return Err(BaseFault::internal("the XPath query pool is closed")),
        Err(_) => {
            tracing::warn!(caller = %who, "XPath query refused: no free query slot within the time limit");
            return Err(limit_fault(format!(
                "the server is busy with other queries ({} at once); no slot became free within the {} ms time limit",
                limits.max_concurrent,
                limits.timeout.as_millis()
            )));
        }
    };
    let cancel = Arc::new(Cancel::default());
    let guard = CancelOnDrop(cancel.clone());
    let (tx, rx) = oneshot::channel();
    let op_limit = limits.op_limit;
    let c = cancel.clone();
    let job: Job = Box::new(move || {
        // The permit and the caller's slot are held until the work has really stopped, and
        // given back before the answer goes out (so the caller's next query finds them free).
        let held = (permit, slot);
        if c.cancelled.load(Ordering::SeqCst) {
            return;
        }
        let r = super::xpath::evaluate(&doc_xml, &expr, &scope, op_limit, &c.ctx, &c.cancelled);
        let cancelled = c.cancelled.load(Ordering::SeqCst);
        drop(held);
        let _ = tx.send((r, cancelled));
    });
    if p.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job).is_err() {
        return Err(BaseFault::internal("the XPath query pool is closed"));
    }
    let outcome = tokio::time::timeout_at(deadline, rx).await;
    drop(guard); // stops the evaluation if it still runs
    use super::xpath::Failure;
    let stopped = |msg: String| {
        tracing::warn!(caller = %who, "XPath query stopped: {msg}");
        Err(limit_fault(msg))
    };
    let late = || format!("the query was stopped: it ran longer than the time limit of {} ms", limits.timeout.as_millis());
    match outcome {
        Ok(Ok((Ok(out), _))) => Ok(out),
        Ok(Ok((Err(Failure::Fault(f)), _))) => Err(f),
        Ok(Ok((Err(Failure::OpLimit), true))) => stopped(late()),
        Ok(Ok((Err(Failure::OpLimit), false))) => {
            stopped(format!("the query exceeded its budget of {op_limit} XPath operations; simplify the expression"))
        }
        Ok(Err(_)) => Err(BaseFault::internal("the XPath evaluation ended without an answer")),
        Err(_) => stopped(late()),
    }
}
