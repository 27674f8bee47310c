//! WS-BaseNotification (2004/06 draft, as GT 4.0 Java WS Core speaks it): Subscribe and
//! GetCurrentMessage on any producer home (a home whose resource type
//! [publishes topics](super::home::ResourceType::with_topics)), the subscriptions as WS-Resources
//! of their own home (`SubscriptionManagerService`, key `{GT core}SubscriptionKey`), and the
//! delivery of `wsnt:Notify` messages to consumers.
//!
//! Topics are the producer's declared properties (value-change topics, Simple dialect: the
//! property's QName) and `wsrl:ResourceTermination`. The [`Notifier`] reads every producer home's
//! change events ([`Home::subscribe`]) in one task per home and appends each change of a
//! subscribed property once to that topic's *stream* of the resource (one log entry, one store
//! row and one wake-up, whatever the number of subscriptions; nothing is built or allocated per
//! subscription). Each subscription has its own worker (one task) that keeps only its position
//! in the stream and builds its Notify when it delivers, so a slow or dead consumer delays
//! nobody else and never the operation that made the change.
//!
//! Delivery: HTTP POST (SOAP 1.1) to `http://` consumers, and to `https://` ones over GSI
//! transport once [`Notifier::use_tls`] set it up ([`ConsumerTls`]: vwsd presents its host
//! credential; the consumer's certificate chain must validate against the trusted CAs and name
//! the consumer's host, else it is sent nothing and the attempt counts as failed; without TLS
//! Subscribe refuses an `https://` consumer, saying why), the consumer's reference
//! properties and parameters copied as headers, one `NotificationMessage` per Notify with Topic,
//! ProducerReference and `wsrp:ResourcePropertyValueChangeNotification` (OldValue when known,
//! NewValue), in commit order per subscription. A transport error, timeout or HTTP 5xx is retried
//! with exponential backoff and jitter (`retry_initial_ms` doubling up to `retry_max_ms`); a
//! message still undelivered after `give_up_secs` marks the subscription **Failed**
//! (`{vws}SubscriptionState` = Failed, `{vws}deliveryFailure` says why), and it then delivers
//! nothing until `ResumeSubscription`, which re-activates it and sends the current value.
//! Overflow: a stream keeps at most `queue_len` changes not yet delivered to all its
//! subscriptions; a worker that falls further behind skips to the end and sends one resync,
//! the property's value at that time (intermediate values are lost, the consumer ends up with
//! the latest one). The same resync is sent to every subscription of a home whose change stream
//! lagged ([`CHANGE_BUFFER`](super::home::CHANGE_BUFFER)) and on ResumeSubscription of a Failed
//! one.
//!
//! Subscriptions are stored like every resource and reloaded at start. Durable delivery (store
//! tables, written to the WAL without an fsync, in commit order behind the change itself):
//! - `notify_change`: one row per committed change of a stream (seq, producer, topic, old and
//!   new values), written as the change is appended right after its commit; each subscription's
//!   envelope is built from it at delivery, with a wsa:MessageID derived from the subscription's
//!   key and the change's seq ([`message_id`]), so a message sent again is the same message.
//! - delivered positions, stored in batches by one flusher task once a stream's deliveries
//!   settle (at most [`FLUSH_WAIT`] later): the most common position of a stream's
//!   subscriptions as its `notify_mark` (with the seq up to which changes were dropped for
//!   overflowing workers), a `notify_cursor` row only for a subscription elsewhere (a slow one),
//!   each written only when it changed — usually one row per batch. The same write deletes the
//!   changes every subscription passed (or that were dropped), so rows do not accumulate.
//! - `outbox`: a resync's envelope, with the subscription's cursor moved to it in the same write,
//!   until delivered.
//!
//! So changes waiting for a slow or dead consumer when vwsd dies (kill -9 included) are delivered
//! after the restart, first and in order — at least once: those delivered since the last stored
//! position arrive again, with the same wsa:MessageID. Destroying a subscription deletes its
//! cursor and messages, and its stream's rows when it was the last. Not covered: a change
//! committed in the instant before a crash, before its row reached the store, and (after a
//! system crash or power loss) the last unsynced writes; the next change or a resume
//! brings the consumer up to date. Destroying a producer
//! sends the `ResourceTermination` message to subscribers of that topic, then destroys all its
//! subscriptions (after a restart that finds the producer gone: once what was stored for them
//! is delivered). Paused subscriptions drop the changes made while paused (as GT 4.0 does).
//! `UseNotify` false is accepted and stored, and, as in GT 4.0, nothing is sent for it.

use super::faults::{BaseFault, FaultType};
use super::home::{Home, PropertyDecl, ResourceState, ResourceType, Values};
use super::lifetime::{check_termination, LifetimePolicy};
use super::notify_messages::{
    notify_envelope as envelope, topic_property, wsnt_property, GetCurrentMessage, GetCurrentMessageResponse, Notify,
    NotifyContent, Subscribe, SubscribeResponse,
};
use crate::security::https::{check_gsi_peer, Connector, PeerCheck};
use crate::security::reload::LiveTrust;
use crate::security::{tls, Credential};
use crate::soap::ns;
use crate::soap::time;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::QName;
use crate::store::{NotifyChange, NotifyCursors, StreamId};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// The subscription manager's service name.
pub const SERVICE: &str = "SubscriptionManagerService";

/// The subscription resources' key: `{http://www.globus.org/namespaces/2004/06/core}SubscriptionKey`.
pub fn key_name() -> QName {
    QName::new(ns::GLOBUS_CORE, "SubscriptionKey")
}

/// The topic every lifetime-managed producer publishes when it is destroyed.
pub fn termination_topic() -> QName {
    QName::new(ns::WSRL, "ResourceTermination")
}

/// The subscription resource property document.
pub fn resource_type() -> ResourceType {
    let w = |l| PropertyDecl::read_only(ns::WSNT, l);
    ResourceType::new(
        QName::new(ns::GLOBUS_CORE, "SubscriptionResourceProperties"),
        vec![
            w("ConsumerReference"),
            w("TopicExpression"),
            w("UseNotify"),
            w("CreationTime"),
            PropertyDecl::read_only(ns::VWS, "SubscriptionState"),
            PropertyDecl::read_only(ns::VWS, "deliveryFailure"),
        ],
    )
}

/// Delivery settings (`[notification]` in vwsd.toml).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Messages a subscription may have waiting before changes are coalesced into one resync.
    pub queue_len: usize,
    /// First retry delay; doubles (with ±50 % jitter) up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// A message undelivered for this long marks the subscription Failed.
    pub give_up: Duration,
    /// One Notify POST (connect + answer).
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queue_len: 1024,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            give_up: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A subscription's delivery state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubState {
    Active,
    Paused,
    Failed,
}

impl SubState {
    fn as_str(self) -> &'static str {
        match self {
            SubState::Active => "Active",
            SubState::Paused => "Paused",
            SubState::Failed => "Failed",
        }
    }
    fn from_u8(v: u8) -> SubState {
        match v {
            1 => SubState::Paused,
            2 => SubState::Failed,
            _ => SubState::Active,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            SubState::Active => 0,
            SubState::Paused => 1,
            SubState::Failed => 2,
        }
    }
}

/// What a subscription remembers (service-private data of its resource).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SubData {
    producer_service: String,
    producer_key: String,
    /// The producer's service URL when the subscription was made (ProducerReference Address).
    producer_address: String,
    topic: String,
    consumer_address: String,
    /// The consumer EPR's reference properties and parameters, each as a header element.
    consumer_headers: Vec<String>,
    use_notify: bool,
    state: SubState,
}

/// One committed change of a stream, as its subscriptions' workers read it.
struct Rec {
    /// Commit sequence (store-wide, increasing); with the subscription's key it makes the
    /// Notify's wsa:MessageID.
    seq: i64,
    msg: RecMsg,
}

enum RecMsg {
    /// A value change: the property's values before (when known) and after.
    Value { old: Option<Arc<str>>, new: Arc<str> },
    /// The producer was destroyed at this time (`wsrl:ResourceTermination`), as xsd:dateTime.
    Terminated(Arc<str>),
}

impl Rec {
    fn content(&self) -> NotifyContent {
        match &self.msg {
            RecMsg::Value { old, new } => {
                NotifyContent::ValueChange { old: old.as_deref().map(str::to_string), new: new.to_string() }
            }
            RecMsg::Terminated(at) => NotifyContent::Termination { time: at.to_string() },
        }
    }
}

/// The changes of one topic of one producer resource, shared by all its subscriptions: one log
/// entry (and one store row) per change whatever the number of subscriptions; each subscription
/// only keeps its position in it.
struct Stream {
    id: StreamId,
    topic: QName,
    inner: Mutex<StreamLog>,
    /// The sequence of the last change appended (workers wait on it).
    head: watch::Sender<i64>,
    /// A worker moved since the last cursor flush.
    dirty: AtomicBool,
}

struct StreamLog {
    /// Changes not yet delivered to every subscription, at most `queue_len`, in sequence order.
    log: VecDeque<Arc<Rec>>,
    /// Changes up to this sequence may be gone from `log`: a worker behind it overflowed.
    trimmed_upto: i64,
    /// The property's last value (the next change's OldValue).
    last: Option<Values>,
    /// The producer is gone: workers end their subscription once past the log's end.
    closed: bool,
    workers: Vec<Arc<Worker>>,
    /// The stream's mark and `trimmed_upto` as stored (`notify_mark`).
    saved_mark: Option<(i64, i64)>,
    /// Changes up to this sequence were deleted from the store.
    saved_delivered: i64,
}

const NO_CURSOR: i64 = i64::MIN;

/// A live subscription's worker, as the dispatcher and the cursor flusher see it.
struct Worker {
    key: String,
    producer: (String, String),
    topic: QName,
    stream: Arc<Stream>,
    /// Every change of the stream up to this sequence has been delivered (or skipped).
    pos: AtomicI64,
    /// Its own row in `notify_cursor` (NO_CURSOR: none, it is at the stream's mark); changed
    /// under the stream's lock only.
    saved: AtomicI64,
    resync_pending: AtomicBool,
    state: AtomicU8,
    stopped: AtomicBool,
    /// A delivery attempt failed and is being retried (not settled: the flusher does not wait).
    retrying: AtomicBool,
    wake: tokio::sync::Notify,
    /// What a Notify is built from: the subscription and the producer's key name (None: nothing
    /// is sent, `UseNotify` false).
    notify: Option<(SubData, QName)>,
}

impl Worker {
    fn state(&self) -> SubState {
        SubState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn resync(&self) {
        self.resync_pending.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// What a worker does next.
enum Next {
    Deliver(Arc<Rec>),
    /// Changes it had not reached were dropped (more than `queue_len` behind): resync.
    Overflow,
    /// The producer is gone and everything was delivered.
    End,
    Wait,
}

impl Stream {
    fn new(id: StreamId, topic: QName, log: VecDeque<Arc<Rec>>, trimmed_upto: i64, head: i64) -> Stream {
        Stream {
            id,
            topic,
            inner: Mutex::new(StreamLog {
                log,
                trimmed_upto,
                last: None,
                closed: false,
                workers: Vec::new(),
                saved_mark: None,
                saved_delivered: NO_CURSOR,
            }),
            head: watch::Sender::new(head),
            dirty: AtomicBool::new(false),
        }
    }

    /// Append one committed change: one store row, one log entry, one wake-up of the stream's
    /// waiting workers — nothing per subscription.
    fn append(&self, n: &Notifier, msg: RecMsg) {
        let mut g = self.inner.lock().unwrap();
        if g.closed {
            return;
        }
        let seq = n.next_seq.fetch_add(1, Ordering::AcqRel);
        let (old, new) = match &msg {
            RecMsg::Value { old, new } => (old.clone(), new.clone()),
            RecMsg::Terminated(at) => (None, at.clone()),
        };
        n.subs.store().notify_change(NotifyChange { seq, stream: self.id.clone(), old, new });
        g.log.push_back(Arc::new(Rec { seq, msg }));
        let mut trimmed = false;
        while g.log.len() > n.settings.queue_len.max(1) {
            if let Some(r) = g.log.pop_front() {
                g.trimmed_upto = r.seq;
                trimmed = true;
            }
        }
        drop(g);
        self.head.send_replace(seq);
        if trimmed {
            // The store may drop those rows too: whoever needed them gets a resync.
            self.dirty.store(true, Ordering::Release);
            n.flush_wake.notify_one();
        }
    }

    fn append_value(&self, n: &Notifier, new: &Values) {
        let old = self.inner.lock().unwrap().last.replace(new.clone()).map(|v| v.xml);
        self.append(n, RecMsg::Value { old, new: new.xml.clone() });
    }

    fn close(&self) {
        self.inner.lock().unwrap().closed = true;
        self.head.send_modify(|_| {});
    }

    fn next(&self, pos: i64) -> Next {
        let g = self.inner.lock().unwrap();
        if pos < g.trimmed_upto {
            return Next::Overflow;
        }
        let i = g.log.partition_point(|r| r.seq <= pos);
        match g.log.get(i) {
            Some(r) => Next::Deliver(r.clone()),
            None if g.closed => Next::End,
            None => Next::Wait,
        }
    }

    /// Every worker is at the head, or retrying a dead consumer.
    fn settled(&self) -> bool {
        let g = self.inner.lock().unwrap();
        let Some(head) = g.log.back().map(|r| r.seq) else { return true };
        g.workers.iter().all(|w| {
            w.pos.load(Ordering::Acquire) >= head || w.retrying.load(Ordering::Acquire) || w.stopped.load(Ordering::Acquire)
        })
    }

    /// Store the workers' positions: the most common one as the stream's mark, a row of its own
    /// for each worker elsewhere (usually none: all are at the head), written only when changed;
    /// and delete the changes every worker has passed (from the store and from memory).
    fn flush(&self, store: &crate::store::Store) {
        self.dirty.store(false, Ordering::Release);
        let mut g = self.inner.lock().unwrap();
        if g.workers.is_empty() {
            return;
        }
        let pos: Vec<i64> = g.workers.iter().map(|w| w.pos.load(Ordering::Acquire)).collect();
        let mut counts: HashMap<i64, usize> = HashMap::new();
        for p in &pos {
            *counts.entry(*p).or_default() += 1;
        }
        let mark = counts.into_iter().max_by_key(|(p, c)| (*c, *p)).map(|(p, _)| p).unwrap_or(NO_CURSOR);
        let min = pos.iter().copied().min().unwrap_or(NO_CURSOR);
        // Changes every worker passed, and those dropped for workers too far behind (they
        // resync), are needed by nobody.
        let upto = min.max(g.trimmed_upto);
        while g.log.front().is_some_and(|r| r.seq <= min) {
            g.log.pop_front();
        }
        g.trimmed_upto = g.trimmed_upto.max(min);
        let mut out = NotifyCursors { stream: self.id.clone(), ..Default::default() };
        let saved = Some((mark, g.trimmed_upto));
        if g.saved_mark != saved {
            out.mark = saved;
            g.saved_mark = saved;
        }
        for (w, p) in g.workers.iter().zip(&pos) {
            let want = if *p == mark { NO_CURSOR } else { *p };
            if w.saved.swap(want, Ordering::AcqRel) != want {
                out.subs.push((w.key.clone(), (want != NO_CURSOR).then_some(want)));
            }
        }
        if upto > NO_CURSOR && g.saved_delivered < upto {
            out.delivered = Some(upto);
            g.saved_delivered = upto;
        }
        if out.mark.is_some() || !out.subs.is_empty() || out.delivered.is_some() {
            // Under the stream's lock, so the writes of one stream reach the store in order.
            store.notify_cursors(out);
        }
    }
}

type HttpClient = Client<Connector, Full<Bytes>>;
type ChangeStream = broadcast::Receiver<Arc<super::home::Change>>;
/// A producer resource: (service, key).
type Producer = (String, String);

/// How long the cursor flusher waits for a stream's deliveries to settle before writing anyway.
const FLUSH_WAIT: Duration = Duration::from_millis(50);

/// Subscriptions and their delivery, for every producer home of the container.
pub struct Notifier {
    /// The subscription resources.
    pub subs: Arc<Home>,
    producers: Mutex<HashMap<String, Arc<Home>>>,
    /// Change streams taken at [`Notifier::watch`], read once [`Notifier::start`]ed.
    pending: Mutex<Vec<(Arc<Home>, ChangeStream)>>,
    /// The streams of each producer (service, key) with live subscriptions; appending to a
    /// stream and adding or removing its workers happen under this lock.
    index: Mutex<HashMap<Producer, Vec<Arc<Stream>>>>,
    workers: Mutex<HashMap<String, Arc<Worker>>>,
    /// The next change's sequence.
    next_seq: AtomicI64,
    /// A worker moved: the cursor flusher has work.
    flush_wake: Arc<tokio::sync::Notify>,
    settings: Settings,
    /// The consumers' client (`http://`, and `https://` once [`Notifier::use_tls`] ran).
    http: RwLock<HttpClient>,
    /// Whether `https://` consumers can be reached (Err: why not, told at Subscribe).
    https: RwLock<Result<(), String>>,
}

/// How vwsd reaches `https://` consumers (GSI transport): the credential it presents (the host
/// credential of its HTTPS listener) and the trusted CAs that must have issued the consumer's
/// certificate, which must also name the consumer's host (a subjectAltName, or as GT 4.0's
/// host authorisation: CN `<host>` or `host/<host>`).
pub struct ConsumerTls {
    pub credential: Option<Credential>,
    pub trust: Arc<LiveTrust>,
}

/// What the notification tables held at start, handed out to the streams and workers.
#[derive(Default)]
struct Loaded {
    changes: HashMap<StreamId, Vec<NotifyChange>>,
    marks: HashMap<StreamId, (i64, i64)>,
    cursors: HashMap<String, i64>,
    outbox: HashMap<String, Vec<(i64, String)>>,
}

impl Notifier {
    /// A notifier over the subscription home `subs`; register producers with [`Notifier::watch`].
    pub fn new(subs: Arc<Home>, settings: Settings) -> Arc<Notifier> {
        let http = http_client(Connector::new(None, settings.timeout));
        let n = Arc::new(Notifier {
            subs: subs.clone(),
            producers: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            index: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
            next_seq: AtomicI64::new(1),
            flush_wake: Arc::new(tokio::sync::Notify::new()),
            settings,
            http: RwLock::new(http),
            https: RwLock::new(Err("no TLS is set up for consumers".into())),
        });
        let weak = Arc::downgrade(&n);
        subs.on_destroy(Box::new(move |key| {
            if let Some(n) = weak.upgrade() {
                n.forget(key);
            }
        }));
        n
    }

    /// Publish the topics of `home`'s resources (its type must [publish](ResourceType::publishes)).
    /// Changes are taken from now on and delivered once [`Notifier::start`] ran.
    pub fn watch(&self, home: Arc<Home>) {
        let rx = home.subscribe();
        self.producers.lock().unwrap().insert(home.service.clone(), home.clone());
        self.pending.lock().unwrap().push((home, rx));
    }

    /// Reach `https://` consumers with `tls` from now on: the TLS client presents its
    /// credential, and a consumer is sent nothing unless its certificate chain validates
    /// against the trusted CAs (as they are now: the trust follows its files) and names the
    /// host of the consumer's address.
    pub fn use_tls(&self, tls: ConsumerTls) -> Result<(), String> {
        let ssl = tls::connector(tls.credential.as_ref()).map_err(|e| format!("TLS set-up for consumers: {e}"))?.build();
        let trust = tls.trust;
        let check: PeerCheck = Arc::new(move |ssl, host| {
            check_gsi_peer(ssl, host, &trust.current().config.cert_dir, "consumer's certificate refused")
        });
        *self.http.write().unwrap() = http_client(Connector::new(Some(ssl), self.settings.timeout).with_check(check));
        *self.https.write().unwrap() = Ok(());
        Ok(())
    }

    /// `https://` consumers cannot be reached, because of `why` (told to a Subscribe naming one).
    pub fn refuse_https(&self, why: impl Into<String>) {
        *self.https.write().unwrap() = Err(why.into());
    }

    /// Load the stored subscriptions and start delivering (inside the runtime).
    pub async fn start(self: &Arc<Self>) {
        // Changes not yet delivered to every subscription when the process stopped, and where
        // each subscription was.
        let mut loaded = Loaded::default();
        match self.subs.store().notify_state() {
            Ok(st) => {
                let max = st
                    .changes
                    .iter()
                    .map(|c| c.seq)
                    .chain(st.marks.iter().map(|m| m.1.max(m.2)))
                    .chain(st.cursors.iter().map(|c| c.1))
                    .max()
                    .unwrap_or(0);
                self.next_seq.store(max.max(0) + 1, Ordering::Release);
                for c in st.changes {
                    loaded.changes.entry(c.stream.clone()).or_default().push(c);
                }
                loaded.marks = st.marks.into_iter().map(|(id, mark, trimmed)| (id, (mark, trimmed))).collect();
                loaded.cursors = st.cursors.into_iter().collect();
                for (sub, seq, body) in st.outbox {
                    loaded.outbox.entry(sub).or_default().push((seq, body));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the queued notifications; they are not delivered"),
        }
        let mut subs_seen = std::collections::HashSet::new();
        for key in self.subs.keys() {
            let d = match self.subs.read(&key, FaultType::NtResourceUnknown, |st| Ok(data_of(st))).await {
                Ok(Some(d)) => d,
                _ => continue,
            };
            let producer = self.producers.lock().unwrap().get(&d.producer_service).cloned();
            let alive = match &producer {
                Some(h) => h.read(&d.producer_key, FaultType::NtResourceUnknown, |_| Ok(())).await.is_ok(),
                None => false,
            };
            if !alive {
                // Its worker delivers what was queued, then ends it.
                tracing::info!(key, "subscription ending: its producer is gone");
            }
            let queued = loaded.outbox.remove(&key).unwrap_or_default();
            if !queued.is_empty() {
                tracing::info!(subscription = %key, messages = queued.len(), "delivering notifications queued before the restart");
            }
            subs_seen.insert(key.clone());
            self.spawn_worker(&key, &d, queued, Some((&mut loaded, alive))).await;
        }
        // What no live subscription needs any more.
        let store = self.subs.store();
        for sub in loaded.outbox.into_keys().chain(loaded.cursors.into_keys()) {
            if !subs_seen.contains(&sub) {
                store.outbox_delete(&sub, None);
            }
        }
        let live: std::collections::HashSet<StreamId> =
            self.index.lock().unwrap().values().flatten().map(|s| s.id.clone()).collect();
        for id in loaded.changes.into_keys().chain(loaded.marks.into_keys()) {
            if !live.contains(&id) {
                store.notify_cursors(NotifyCursors { stream: id, drop_stream: true, ..Default::default() });
            }
        }
        tracing::info!(subscriptions = self.workers.lock().unwrap().len(), "notification delivery started");
        let n = Arc::downgrade(self);
        let wake = self.flush_wake.clone();
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                let start = Instant::now();
                loop {
                    let Some(n) = n.upgrade() else { return };
                    let dirty: Vec<Arc<Stream>> =
                        n.index.lock().unwrap().values().flatten().filter(|s| s.dirty.load(Ordering::Acquire)).cloned().collect();
                    if start.elapsed() >= FLUSH_WAIT || dirty.iter().all(|s| s.settled()) {
                        for s in dirty {
                            s.flush(n.subs.store());
                        }
                        break;
                    }
                    drop(n);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        for (home, mut rx) in pending {
            let n = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    let r = rx.recv().await;
                    let Some(n) = n.upgrade() else { break };
                    match r {
                        Ok(change) => n.on_change(&home, &change),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(service = %home.service, missed, "notification dispatcher lagged; subscribers get a resync of the current value");
                            n.resync_all(&home.service);
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.workers.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One committed change: appended once to each subscribed stream of the resource (work and
    /// store writes independent of the number of subscriptions).
    fn on_change(&self, home: &Home, change: &super::home::Change) {
        use super::home::ChangeKind;
        let idx = self.index.lock().unwrap();
        let Some(list) = idx.get(&(home.service.clone(), change.key.clone())) else { return };
        match change.kind {
            ChangeKind::Create => {}
            ChangeKind::Update => {
                for s in list {
                    if let Some(v) = change.get(&s.topic) {
                        s.append_value(self, v);
                    }
                }
            }
            ChangeKind::Destroy => {
                let at: Arc<str> = time::format_ms(time::now_ms()).into();
                let term = termination_topic();
                for s in list {
                    if s.topic == term {
                        s.append(self, RecMsg::Terminated(at.clone()));
                    }
                    s.close();
                }
            }
        }
    }

    fn resync_all(&self, service: &str) {
        let idx = self.index.lock().unwrap();
        for ((s, _), list) in idx.iter() {
            if s == service {
                for st in list {
                    for w in &st.inner.lock().unwrap().workers {
                        if w.state() == SubState::Active {
                            w.resync();
                        }
                    }
                }
            }
        }
    }

    /// A subscription resource is gone: stop its worker, forget its cursor and messages, and
    /// drop its stream (changes and mark) when it was the stream's last subscription.
    fn forget(&self, key: &str) {
        let w = self.workers.lock().unwrap().remove(key);
        let store = self.subs.store();
        if let Some(w) = w {
            let mut idx = self.index.lock().unwrap();
            let mut g = w.stream.inner.lock().unwrap();
            g.workers.retain(|x| x.key != key);
            store.outbox_delete(key, None);
            if g.workers.is_empty() {
                store.notify_cursors(NotifyCursors { stream: w.stream.id.clone(), drop_stream: true, ..Default::default() });
                g.log.clear();
                g.closed = true;
                if let Some(list) = idx.get_mut(&w.producer) {
                    list.retain(|s| !Arc::ptr_eq(s, &w.stream));
                    if list.is_empty() {
                        idx.remove(&w.producer);
                    }
                }
            }
            drop(g);
            drop(idx);
            w.stop();
        } else {
            store.outbox_delete(key, None);
        }
    }

    async fn current_value(&self, service: &str, key: &str, topic: &QName) -> Option<Values> {
        let home = self.producers.lock().unwrap().get(service).cloned()?;
        home.read(key, FaultType::NtResourceUnknown, |st| Ok(current_values(&home.rtype, st, topic))).await.ok().flatten()
    }

    /// Start a subscription's worker: `queued` are its own stored messages (delivered first);
    /// `loaded` what the store held at start-up (and whether the producer lives), None for a
    /// new subscription.
    async fn spawn_worker(
        self: &Arc<Self>,
        key: &str,
        d: &SubData,
        queued: Vec<(i64, String)>,
        loaded: Option<(&mut Loaded, bool)>,
    ) {
        let topic = QName::from_clark(&d.topic).unwrap_or_else(|| QName::new("", &d.topic));
        let last = self.current_value(&d.producer_service, &d.producer_key, &topic).await;
        let pk = self.producers.lock().unwrap().get(&d.producer_service).map(|h| h.key_name.clone());
        let notify = pk.filter(|_| d.use_notify).map(|pk| (d.clone(), pk));
        let producer = (d.producer_service.clone(), d.producer_key.clone());
        let id: StreamId = (d.producer_service.clone(), d.producer_key.clone(), d.topic.clone());
        let store = self.subs.store();
        let (mut loaded, alive) = match loaded {
            Some((l, alive)) => (Some(l), alive),
            None => (None, true),
        };
        let mut idx = self.index.lock().unwrap();
        let list = idx.entry(producer.clone()).or_default();
        let stream = match list.iter().find(|s| s.id == id) {
            Some(s) => s.clone(),
            None => {
                // A new stream: at start-up, with the changes the store kept for it.
                let head = self.next_seq.load(Ordering::Acquire) - 1;
                let mut rows: VecDeque<Arc<Rec>> = VecDeque::new();
                let mut trimmed = NO_CURSOR;
                let mut mark = None;
                if let Some(l) = loaded.as_deref_mut() {
                    mark = l.marks.get(&id).copied();
                    trimmed = mark.map_or(NO_CURSOR, |m| m.1);
                    for c in l.changes.remove(&id).unwrap_or_default() {
                        let msg = if topic == termination_topic() {
                            RecMsg::Terminated(c.new)
                        } else {
                            RecMsg::Value { old: c.old, new: c.new }
                        };
                        rows.push_back(Arc::new(Rec { seq: c.seq, msg }));
                        if rows.len() > self.settings.queue_len.max(1) {
                            if let Some(r) = rows.pop_front() {
                                trimmed = r.seq;
                            }
                        }
                    }
                }
                let s = Arc::new(Stream::new(id.clone(), topic.clone(), rows, trimmed, head));
                {
                    let mut g = s.inner.lock().unwrap();
                    g.last = last;
                    g.saved_mark = mark;
                    g.closed = !alive;
                }
                list.push(s.clone());
                s
            }
        };
        let mut g = stream.inner.lock().unwrap();
        let own = loaded.as_deref_mut().and_then(|l| l.cursors.remove(key));
        let head = *stream.head.borrow();
        // Where it starts: its own cursor, else the stream's mark, else (a new subscription)
        // after the last change; a new position is stored at once.
        let (pos, saved) = match (own, g.saved_mark) {
            (Some(c), _) => (c, c),
            (None, Some((m, _))) if loaded.is_some() => (m, NO_CURSOR),
            _ => {
                store.notify_cursors(NotifyCursors {
                    stream: id.clone(),
                    subs: vec![(key.to_string(), Some(head))],
                    ..Default::default()
                });
                (head, head)
            }
        };
        let w = Arc::new(Worker {
            key: key.to_string(),
            producer,
            topic,
            stream: stream.clone(),
            pos: AtomicI64::new(pos),
            saved: AtomicI64::new(saved),
            resync_pending: AtomicBool::new(false),
            state: AtomicU8::new(d.state.to_u8()),
            stopped: AtomicBool::new(false),
            retrying: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            notify,
        });
        g.workers.push(w.clone());
        drop(g);
        drop(idx);
        self.workers.lock().unwrap().insert(key.to_string(), w.clone());
        let n = Arc::downgrade(self);
        let d = d.clone();
        tokio::spawn(async move { run_worker(n, w, d, queued).await });
    }

    /// Subscribe: `req` was sent to resource `key` of `home`, at `service_url`. `guard`
    /// authorises the caller on the producer. Answers the new subscription's EPR.
    #[allow(clippy::too_many_arguments)]
    pub async fn subscribe(
        self: &Arc<Self>,
        home: &Home,
        key: &str,
        req: &Subscribe,
        service_url: &str,
        owner: super::home::Owner,
        policy: &LifetimePolicy,
        guard: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
    ) -> Result<SubscribeResponse, BaseFault> {
        let producer_ok = self.producers.lock().unwrap().get(&home.service).is_some_and(|h| std::ptr::eq(&**h, home));
        home.read(key, FaultType::NtResourceUnknown, guard).await?;
        let topic = &req.topic;
        if !producer_ok || !home.rtype.publishes() || !home.rtype.topics().contains(topic) {
            return Err(not_supported(topic, home));
        }
        let consumer = &req.consumer;
        if consumer.address.starts_with("https://") {
            if let Err(why) = &*self.https.read().unwrap() {
                return Err(BaseFault::new(
                    FaultType::SubscribeCreationFailed,
                    format!("wsnt:ConsumerReference: address '{}': https consumers cannot be reached: {why}", consumer.address),
                ));
            }
        }
        let use_notify = req.use_notify.unwrap_or(true);
        let now = time::now_ms();
        let termination = match req.initial_termination_ms {
            Some(t) => {
                if t <= now {
                    return Err(BaseFault::new(
                        FaultType::UnacceptableInitialTerminationTime,
                        format!("InitialTerminationTime {} is not in the future", time::format_ms(t)),
                    ));
                }
                check_termination(Some(t), now, policy)
                    .map_err(|e| BaseFault::new(FaultType::UnacceptableInitialTerminationTime, e.description))?;
                Some(t)
            }
            None => policy.max_lifetime_ms.map(|m| now + m),
        };
        let data = SubData {
            producer_service: home.service.clone(),
            producer_key: key.to_string(),
            producer_address: service_url.to_string(),
            topic: topic.clark(),
            consumer_address: consumer.address.clone(),
            consumer_headers: consumer.properties.iter().chain(&consumer.parameters).map(|p| with_must_understand_0(p)).collect(),
            use_notify,
            state: SubState::Active,
        };
        let rtype = &self.subs.rtype;
        let mut st = ResourceState::new(rtype, owner, termination);
        st.set(rtype, ns::WSNT, "ConsumerReference", vec![consumer.to_property()]);
        st.set(rtype, ns::WSNT, "TopicExpression", vec![topic_property("TopicExpression", topic)]);
        st.set(rtype, ns::WSNT, "UseNotify", vec![wsnt_property("UseNotify", if use_notify { "true" } else { "false" })]);
        st.set(rtype, ns::WSNT, "CreationTime", vec![wsnt_property("CreationTime", &time::format_ms(now))]);
        write_state(rtype, &mut st, &data, None);
        let sub_key = self.subs.create(st).await?;
        self.spawn_worker(&sub_key, &data, Vec::new(), None).await;
        tracing::info!(subscription = %sub_key, producer = %home.service, key, topic = %topic, consumer = %data.consumer_address, "subscribed");
        Ok(SubscribeResponse { subscription: self.subs.epr(&subscription_url(service_url), &sub_key) })
    }

    /// Pause or resume a subscription (`guard` authorises the caller on it). Resuming a Failed
    /// subscription re-activates it and sends the current value.
    pub async fn set_paused(
        &self,
        key: &str,
        paused: bool,
        guard: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
    ) -> Result<(), BaseFault> {
        let rtype = &self.subs.rtype;
        let was = self
            .subs
            .update(key, FaultType::NtResourceUnknown, |st| {
                guard(st)?;
                let mut d = data_of(st).ok_or_else(|| BaseFault::internal(format!("subscription '{key}' data unreadable")))?;
                let was = d.state;
                d.state = if paused { SubState::Paused } else { SubState::Active };
                write_state(rtype, st, &d, None);
                Ok(was)
            })
            .await?;
        let w = self.workers.lock().unwrap().get(key).cloned();
        if let Some(w) = w {
            w.state.store(if paused { SubState::Paused } else { SubState::Active }.to_u8(), Ordering::Release);
            if !paused && was == SubState::Failed {
                w.resync();
            }
        }
        Ok(())
    }

    /// GetCurrentMessage: the last message of a topic of resource `key` of `home` (for a value
    /// topic, the property's current value; `ResourceTermination` has none while the resource lives).
    pub async fn current_message(
        &self,
        home: &Home,
        key: &str,
        req: &GetCurrentMessage,
        guard: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
    ) -> Result<GetCurrentMessageResponse, BaseFault> {
        let publishes = self.producers.lock().unwrap().contains_key(&home.service) && home.rtype.publishes();
        let topic = &req.topic;
        let rtype = &home.rtype;
        home.read(key, FaultType::NtResourceUnknown, |st| {
            guard(st)?;
            if !publishes || !rtype.topics().contains(topic) {
                return Err(not_supported(topic, home));
            }
            match current_values(rtype, st, topic) {
                Some(v) if v.count > 0 => Ok(GetCurrentMessageResponse { new_value: v.xml.to_string() }),
                _ => Err(BaseFault::new(
                    FaultType::NoCurrentMessageOnTopic,
                    format!("no message has been published on topic {topic}"),
                )),
            }
        })
        .await
    }

    /// Send the property's current value (after an overflow — `skip`: move past every change
    /// in the stream first —, a lagged change stream or a resume). The message sits in the
    /// store's `outbox` at the subscription's position until delivered, its cursor moved there
    /// in the same write, so after a crash it is sent again before any later change.
    async fn resync(&self, w: &Worker, d: &SubData, topic: &QName, skip: bool) {
        if skip {
            let g = w.stream.inner.lock().unwrap();
            let head = g.log.back().map_or(g.trimmed_upto, |r| r.seq).max(*w.stream.head.borrow());
            w.pos.fetch_max(head, Ordering::AcqRel);
            drop(g);
            w.stream.dirty.store(true, Ordering::Release);
            self.flush_wake.notify_one();
            tracing::warn!(subscription = %w.key, "notification queue full; the consumer gets the current value instead");
        }
        if w.state() != SubState::Active {
            return;
        }
        let Some((_, pk)) = &w.notify else { return };
        let Some(v) = self.current_value(&w.producer.0, &w.producer.1, topic).await else { return };
        let env = notify_envelope(
            d,
            pk,
            topic,
            NotifyContent::ValueChange { old: None, new: v.xml.to_string() },
            &crate::soap::envelope::new_message_id(),
        );
        let at = {
            let g = w.stream.inner.lock().unwrap();
            let at = w.pos.load(Ordering::Acquire);
            // Under the stream's lock: ordered with the cursor flushes of its stream.
            self.subs.store().outbox_queue(&w.key, at, &env);
            w.saved.store(at, Ordering::Release);
            drop(g);
            at
        };
        self.deliver(w, d, &env).await;
        self.subs.store().outbox_delete(&w.key, Some(at));
    }

    /// Mark a subscription Failed (store first), with why.
    async fn fail(&self, w: &Worker, why: &str) {
        let rtype = &self.subs.rtype;
        let r = self
            .subs
            .update(&w.key, FaultType::NtResourceUnknown, |st| {
                let mut d = data_of(st).ok_or_else(|| BaseFault::internal("subscription data unreadable"))?;
                d.state = SubState::Failed;
                write_state(rtype, st, &d, Some(why));
                Ok(())
            })
            .await;
        if r.is_ok() {
            w.state.store(SubState::Failed.to_u8(), Ordering::Release);
        }
        tracing::warn!(subscription = %w.key, reason = why, "subscription failed: notifications stopped");
    }

    /// POST one Notify; Ok when the consumer answered (any status below 500).
    async fn post(&self, address: &str, body: &str) -> Result<(), String> {
        let authority = address.parse::<hyper::Uri>().ok().and_then(|u| u.authority().map(|a| a.to_string())).unwrap_or_default();
        let req = hyper::Request::post(address)
            .header("Host", authority)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{}/Notify\"", ns::WSNT_ACTION))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let http = self.http.read().unwrap().clone();
        let resp = tokio::time::timeout(self.settings.timeout, http.request(req))
            .await
            .map_err(|_| format!("no answer within {} ms", self.settings.timeout.as_millis()))?
            .map_err(|e| {
                use std::error::Error;
                let mut s = e.to_string();
                let mut src = e.source();
                while let Some(c) = src {
                    s.push_str(&format!(": {c}"));
                    src = c.source();
                }
                s
            })?;
        let status = resp.status().as_u16();
        // Drain the answer so the connection can be reused.
        let _ = tokio::time::timeout(self.settings.timeout, http_body_util::BodyExt::collect(resp.into_body())).await;
        if status >= 500 {
            return Err(format!("HTTP {status}"));
        }
        Ok(())
    }

    /// Deliver `body` with retries; false when the subscription failed or stopped meanwhile.
    async fn deliver(&self, w: &Worker, d: &SubData, body: &str) -> bool {
        let start = Instant::now();
        let mut delay = self.settings.retry_initial;
        let mut attempts = 0u32;
        let _retrying = Retrying(&w.retrying);
        loop {
            attempts += 1;
            let err = match self.post(&d.consumer_address, body).await {
                Ok(()) => return true,
                Err(e) => e,
            };
            w.retrying.store(true, Ordering::Release);
            if w.stopped.load(Ordering::Acquire) {
                return false;
            }
            let jittered = delay.mul_f64(0.5 + rand::random::<f64>());
            if start.elapsed() + jittered > self.settings.give_up {
                let why = format!(
                    "consumer {} unreachable: {err} ({attempts} attempts over {} s, since {})",
                    d.consumer_address,
                    start.elapsed().as_secs(),
                    time::format_ms(time::now_ms() - start.elapsed().as_millis() as i64)
                );
                self.fail(w, &why).await;
                return false;
            }
            tracing::debug!(subscription = %w.key, error = %err, attempt = attempts, "Notify not delivered; retrying");
            tokio::select! {
                _ = tokio::time::sleep(jittered) => {}
                _ = w.wake.notified() => {}
            }
            if w.stopped.load(Ordering::Acquire) {
                return false;
            }
            delay = (delay * 2).min(self.settings.retry_max);
        }
    }
}

fn http_client(c: Connector) -> HttpClient {
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(c)
}

/// The wsa:MessageID of the Notify of change `seq` to subscription `sub`: the same every time
/// it is sent (after a restart too), different for every other pair.
fn message_id(sub: &str, seq: i64) -> String {
    let mut input = Vec::with_capacity(sub.len() + 24);
    input.extend_from_slice(b"vws-notify\0");
    input.extend_from_slice(sub.as_bytes());
    input.push(0);
    input.extend_from_slice(&seq.to_be_bytes());
    let h = openssl::sha::sha1(&input);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    format!("uuid:{}", uuid::Builder::from_sha1_bytes(b).into_uuid())
}

/// Clears a worker's `retrying` flag when its delivery ends.
struct Retrying<'a>(&'a AtomicBool);

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn run_worker(n: std::sync::Weak<Notifier>, w: Arc<Worker>, d: SubData, queued: Vec<(i64, String)>) {
    let topic = w.topic.clone();
    // First its own messages queued before a restart, in order (sent again as they were: same
    // MessageID).
    for (seq, env) in queued {
        let Some(n) = n.upgrade() else { return };
        if w.stopped.load(Ordering::Acquire) {
            return;
        }
        if w.state() == SubState::Active {
            n.deliver(&w, &d, &env).await;
        }
        n.subs.store().outbox_delete(&w.key, Some(seq));
    }
    let mut head = w.stream.head.subscribe();
    loop {
        if w.stopped.load(Ordering::Acquire) {
            break;
        }
        let Some(n) = n.upgrade() else { break };
        if w.resync_pending.swap(false, Ordering::AcqRel) {
            n.resync(&w, &d, &topic, false).await;
            continue;
        }
        head.borrow_and_update();
        match w.stream.next(w.pos.load(Ordering::Acquire)) {
            Next::Deliver(rec) => {
                if w.state() == SubState::Active {
                    if let Some((d, pk)) = &w.notify {
                        let env = notify_envelope(d, pk, &topic, rec.content(), &message_id(&w.key, rec.seq));
                        n.deliver(&w, d, &env).await;
                    }
                }
                w.pos.fetch_max(rec.seq, Ordering::AcqRel);
                w.stream.dirty.store(true, Ordering::Release);
                n.flush_wake.notify_one();
            }
            Next::Overflow => n.resync(&w, &d, &topic, true).await,
            Next::End => {
                let _ = n.subs.destroy(&w.key, FaultType::NtResourceUnknown, |_| Ok(())).await;
                tracing::info!(subscription = %w.key, "subscription ended: its producer was destroyed");
                break;
            }
            Next::Wait => {
                drop(n);
                tokio::select! {
                    _ = head.changed() => {}
                    _ = w.wake.notified() => {}
                }
            }
        }
    }
}

fn data_of(st: &ResourceState) -> Option<SubData> {
    serde_json::from_str(&st.data).ok()
}

/// Store a subscription's data and the properties that show its state.
fn write_state(rtype: &ResourceType, st: &mut ResourceState, d: &SubData, failure: Option<&str>) {
    let mut w = XmlWriter::with_capacity(96);
    w.leaf("v:SubscriptionState", &[("xmlns:v", ns::VWS)], d.state.as_str());
    st.set(rtype, ns::VWS, "SubscriptionState", vec![w.into_string()]);
    let failure = match (d.state, failure) {
        (SubState::Failed, Some(why)) => {
            let mut w = XmlWriter::with_capacity(256);
            w.start("v:deliveryFailure", &[("xmlns:v", ns::VWS)])
                .leaf("v:time", &[], &time::format_ms(time::now_ms()))
                .leaf("v:reason", &[], why)
                .end("v:deliveryFailure");
            vec![w.into_string()]
        }
        (SubState::Failed, None) => st.get(rtype, &QName::new(ns::VWS, "deliveryFailure")).map(split_values).unwrap_or_default(),
        _ => Vec::new(),
    };
    st.set(rtype, ns::VWS, "deliveryFailure", failure);
    st.set_data(&serde_json::to_string(d).expect("serializable"));
}

/// The stored values as one string per element count (kept as one when several).
fn split_values(v: &Values) -> Vec<String> {
    if v.count == 0 {
        Vec::new()
    } else {
        vec![v.xml.to_string()]
    }
}

/// The current values of the property a value topic names.
fn current_values(rtype: &ResourceType, st: &ResourceState, topic: &QName) -> Option<Values> {
    let i = rtype.index_of(topic)?;
    match rtype.props[i].source {
        super::home::Source::Stored => Some(st.values[i].clone()),
        super::home::Source::TerminationTime => Some(Values::new(&[super::properties::value_xml(rtype, st, i)])),
        _ => None,
    }
}

fn not_supported(topic: &QName, home: &Home) -> BaseFault {
    let topics: Vec<String> =
        if home.rtype.publishes() { home.rtype.topics().iter().map(|t| t.clark()).collect() } else { vec![] };
    let also = if topics.is_empty() {
        format!("service {} publishes no topics", home.service)
    } else {
        format!("{} publishes {}", home.service, topics.join(", "))
    };
    BaseFault::new(FaultType::TopicNotSupported, format!("topic {} is not supported: {also}", topic.clark()))
}

/// Adds `soapenv:mustUnderstand="0"` to a fragment's start tag (as GT 4.0 does for the
/// consumer's reference properties).
fn with_must_understand_0(frag: &str) -> String {
    let mut quote = None;
    for (i, c) in frag.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"') | (None, '\'') => quote = Some(c),
            (None, '>') => {
                let at = if frag[..i].ends_with('/') { i - 1 } else { i };
                return format!("{} soapenv:mustUnderstand=\"0\"{}", &frag[..at], &frag[at..]);
            }
            _ => {}
        }
    }
    frag.to_string()
}

/// The subscription manager's URL next to a producer's service URL.
fn subscription_url(service_url: &str) -> String {
    match service_url.rfind('/') {
        Some(i) => format!("{}/{SERVICE}", &service_url[..i]),
        None => SERVICE.to_string(),
    }
}

/// The whole Notify envelope of one message to subscription `d`.
fn notify_envelope(d: &SubData, producer_key_name: &QName, topic: &QName, content: NotifyContent, message_id: &str) -> String {
    let body = Notify {
        topic: topic.clone(),
        producer_address: d.producer_address.clone(),
        producer_key_name: producer_key_name.clone(),
        producer_key: d.producer_key.clone(),
        content,
    };
    envelope(message_id, &d.consumer_address, &d.consumer_headers, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn must_understand_goes_into_the_start_tag() {
        assert_eq!(
            with_must_understand_0("<c:K xmlns:c=\"urn:a>b\">42</c:K>"),
            "<c:K xmlns:c=\"urn:a>b\" soapenv:mustUnderstand=\"0\">42</c:K>"
        );
        assert_eq!(with_must_understand_0("<c:K xmlns:c=\"urn:c\"/>"), "<c:K xmlns:c=\"urn:c\" soapenv:mustUnderstand=\"0\"/>");
    }

    #[test]
    fn a_message_id_is_the_same_for_the_same_change_and_subscription_only() {
        let a = message_id("sub-1", 7);
        assert_eq!(a, message_id("sub-1", 7), "sent again after a restart: the same MessageID");
        assert!(a.starts_with("uuid:") && uuid::Uuid::parse_str(&a[5..]).is_ok(), "{a}");
        assert_ne!(a, message_id("sub-1", 8));
        assert_ne!(a, message_id("sub-2", 7));
        assert_ne!(message_id("sub-1", 17), message_id("sub-11", 7));
    }

    #[test]
    fn subscription_manager_lives_next_to_the_producer() {
        assert_eq!(
            subscription_url("http://h:1/wsrf/services/WorkspaceService"),
            "http://h:1/wsrf/services/SubscriptionManagerService"
        );
    }
}
