//! Resource homes: the WS-Resources of one service, kept in memory for reads and written through
//! to the store before any change is acknowledged. A home knows its resource property
//! declarations, its key QName and its lifetime index; it knows nothing of what the resources mean.
//!
//! After every committed create, update and destroy a home runs its hooks ([`Home::on_change`],
//! [`Home::on_destroy`], as many as were registered) and publishes a [`Change`] on a broadcast
//! channel ([`Home::subscribe`]): the resource key, the kind of change, and the properties whose
//! values changed with their new values. Per resource, changes are published in commit order.
//! Publishing never waits for a subscriber: one that falls more than [`CHANGE_BUFFER`] events
//! behind loses the oldest ones (its next `recv` says how many it missed).

use super::faults::{BaseFault, FaultType};
use super::intern::intern;
use super::sweeper::Sweeper;
pub use crate::security::Owner;
use crate::soap::envelope::Envelope;
use crate::soap::epr::Epr;
use crate::soap::xml::QName;
use crate::store::{Row, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::{broadcast, Mutex};

/// Where a property's values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Stored values, set by the service or by SetResourceProperties.
    Stored,
    /// The container's clock (`wsrl:CurrentTime`).
    CurrentTime,
    /// The resource's termination time (`wsrl:TerminationTime`, nil = never).
    TerminationTime,
    /// `wsnt:Topic`: one element per topic the resource publishes ([`ResourceType::topics`]).
    Topics,
    /// `wsnt:FixedTopicSet`: true, the topics follow from the declarations.
    FixedTopicSet,
    /// `wsnt:TopicExpressionDialects`: the Simple dialect, the only one evaluated.
    TopicDialects,
}

/// One declared resource property.
#[derive(Clone, Debug)]
pub struct PropertyDecl {
    pub name: QName,
    pub source: Source,
    /// May SetResourceProperties insert, update or delete it?
    pub modifiable: bool,
    pub min_occurs: usize,
    pub max_occurs: Option<usize>,
}

impl PropertyDecl {
    pub fn read_only(ns: &str, local: &str) -> Self {
        PropertyDecl { name: QName::new(ns, local), source: Source::Stored, modifiable: false, min_occurs: 0, max_occurs: None }
    }
    /// A read-only property computed by the container.
    pub fn computed(ns: &str, local: &str, source: Source) -> Self {
        PropertyDecl { name: QName::new(ns, local), source, modifiable: false, min_occurs: 1, max_occurs: Some(1) }
    }
    pub fn modifiable(ns: &str, local: &str, min: usize, max: Option<usize>) -> Self {
        PropertyDecl { name: QName::new(ns, local), source: Source::Stored, modifiable: true, min_occurs: min, max_occurs: max }
    }
}

/// The shape of a resource property document, in document order.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub rp_root: QName,
    pub props: Vec<PropertyDecl>,
}

impl ResourceType {
    /// A lifetime-managed resource type: `props` followed by `wsrl:TerminationTime` and
    /// `wsrl:CurrentTime`, as GT 4.0 orders them.
    pub fn new(rp_root: QName, mut props: Vec<PropertyDecl>) -> Self {
        use crate::soap::ns::WSRL;
        props.push(PropertyDecl::computed(WSRL, "TerminationTime", Source::TerminationTime));
        props.push(PropertyDecl::computed(WSRL, "CurrentTime", Source::CurrentTime));
        ResourceType { rp_root, props }
    }

    pub fn index_of(&self, q: &QName) -> Option<usize> {
        self.props.iter().position(|p| &p.name == q)
    }

    /// The same type publishing notification topics (WS-BaseNotification producer): the
    /// document gains `wsnt:Topic` (one per topic), `wsnt:FixedTopicSet` and
    /// `wsnt:TopicExpressionDialects`, as GT 4.0's producers list them.
    pub fn with_topics(mut self) -> Self {
        use crate::soap::ns::WSNT;
        let computed = |local, source| PropertyDecl {
            name: QName::new(WSNT, local),
            source,
            modifiable: false,
            min_occurs: 1,
            max_occurs: None,
        };
        self.props.push(computed("Topic", Source::Topics));
        self.props.push(computed("FixedTopicSet", Source::FixedTopicSet));
        self.props.push(computed("TopicExpressionDialects", Source::TopicDialects));
        self
    }

    /// Does this type publish topics ([`ResourceType::with_topics`])?
    pub fn publishes(&self) -> bool {
        self.props.iter().any(|p| p.source == Source::Topics)
    }

    /// The topics a resource of this type publishes: a value-change topic per stored property
    /// and for `wsrl:TerminationTime`, then `wsrl:ResourceTermination` when it has a lifetime.
    pub fn topics(&self) -> Vec<QName> {
        let mut out: Vec<QName> = self
            .props
            .iter()
            .filter(|p| matches!(p.source, Source::Stored | Source::TerminationTime))
            .map(|p| p.name.clone())
            .collect();
        if self.props.iter().any(|p| p.source == Source::TerminationTime) {
            out.push(QName::new(crate::soap::ns::WSRL, "ResourceTermination"));
        }
        out
    }
}

/// The values of one stored property: `count` elements, serialized back to back (shared text).
#[derive(Clone, Debug)]
pub struct Values {
    pub count: u32,
    pub xml: Arc<str>,
}

impl Values {
    pub fn new(values: &[String]) -> Values {
        Values { count: values.len() as u32, xml: intern(&values.concat()) }
    }
    pub fn empty() -> Values {
        Values { count: 0, xml: intern("") }
    }
}

/// The state of one resource.
#[derive(Clone, Debug)]
pub struct ResourceState {
    pub key: String,
    pub termination_ms: Option<i64>,
    pub owner: Owner,
    /// Property values aligned with `ResourceType::props` (computed properties stay empty).
    pub values: Box<[Values]>,
    /// Service-private state (e.g. the workspace description and life-cycle state) as JSON text.
    pub data: Arc<str>,
    destroyed: bool,
}

#[derive(Serialize, Deserialize)]
struct Record {
    owner: Owner,
    /// Clark name -> (count, concatenated elements).
    values: BTreeMap<String, (u32, String)>,
    #[serde(default)]
    data: String,
}

impl ResourceState {
    pub fn new(rtype: &ResourceType, owner: Owner, termination_ms: Option<i64>) -> Self {
        ResourceState {
            key: String::new(),
            termination_ms,
            owner,
            values: vec![Values::empty(); rtype.props.len()].into_boxed_slice(),
            data: intern(""),
            destroyed: false,
        }
    }

    /// Set the values of a declared property (panics on an undeclared one: a programming error).
    pub fn set(&mut self, rtype: &ResourceType, ns: &str, local: &str, values: Vec<String>) {
        let i = rtype.index_of(&QName::new(ns, local)).unwrap_or_else(|| panic!("undeclared property {{{ns}}}{local}"));
        self.values[i] = Values::new(&values);
    }

    /// The serialized values of a property.
    pub fn get(&self, rtype: &ResourceType, q: &QName) -> Option<&Values> {
        rtype.index_of(q).map(|i| &self.values[i])
    }

    /// Set the service-private data (JSON text).
    pub fn set_data(&mut self, json: &str) {
        self.data = intern(json);
    }

    fn to_record(&self, rtype: &ResourceType) -> String {
        let values = rtype
            .props
            .iter()
            .zip(self.values.iter())
            .filter(|(d, v)| d.source == Source::Stored && v.count > 0)
            .map(|(d, v)| (d.name.clark(), (v.count, v.xml.to_string())))
            .collect();
        let r = Record { owner: self.owner.clone(), values, data: self.data.to_string() };
        serde_json::to_string(&r).expect("record serializes")
    }

    fn from_row(rtype: &ResourceType, row: &Row) -> Result<Self, String> {
        let mut r: Record = serde_json::from_str(&row.record).map_err(|e| e.to_string())?;
        let values = rtype
            .props
            .iter()
            .map(|d| match r.values.remove(&d.name.clark()) {
                Some((count, xml)) => Values { count, xml: intern(&xml) },
                None => Values::empty(),
            })
            .collect();
        Ok(ResourceState {
            key: row.key.clone(),
            termination_ms: row.termination_ms,
            owner: r.owner,
            values,
            data: intern(&r.data),
            destroyed: false,
        })
    }
}

type Entry = Arc<Mutex<ResourceState>>;

/// How many change events a subscriber may fall behind before it loses the oldest.
pub const CHANGE_BUFFER: usize = 256;

/// What a committed change did to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Update,
    Destroy,
}

/// One committed change of one resource, as [`Home`] publishes it.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: ChangeKind,
    pub key: String,
    /// The properties whose values this change set or changed, in document order, each with its
    /// new values: every stored property that has values and `wsrl:TerminationTime` for a
    /// create; only those that differ for an update (a new termination time shows as
    /// `wsrl:TerminationTime`, nil when there is none); nothing for a destroy.
    pub props: Vec<(QName, Values)>,
}

impl Change {
    /// The new values of `q`, when this change set it.
    pub fn get(&self, q: &QName) -> Option<&Values> {
        self.props.iter().find(|(n, _)| n == q).map(|(_, v)| v)
    }

    /// The names of the properties this change set, in document order.
    pub fn names(&self) -> impl Iterator<Item = &QName> {
        self.props.iter().map(|(n, _)| n)
    }
}

/// A dateTime-valued property element (`xsi:nil` when None).
pub fn time_property_xml(name: &QName, t: Option<i64>) -> String {
    let tag = format!("p:{}", name.local);
    let mut w = crate::soap::writer::XmlWriter::with_capacity(128);
    match t {
        Some(t) => w.leaf(&tag, &[("xmlns:p", &name.ns)], &super::time::format_ms(t)),
        None => w.empty(&tag, &[("xmlns:p", &name.ns), ("xmlns:xsi", crate::soap::ns::XSI), ("xsi:nil", "true")]),
    };
    w.into_string()
}

/// `wsrl:TerminationTime`'s element for a termination time (nil when None).
fn termination_values(name: &QName, t: Option<i64>) -> Values {
    Values::new(&[time_property_xml(name, t)])
}

fn same(a: &Values, b: &Values) -> bool {
    a.count == b.count && (Arc::ptr_eq(&a.xml, &b.xml) || a.xml == b.xml)
}

/// The resources of one service.
pub struct Home {
    pub service: String,
    pub key_name: QName,
    pub rtype: ResourceType,
    map: RwLock<HashMap<String, Entry>>,
    store: Store,
    sweeper: Arc<Sweeper>,
    index: usize,
    /// Called with the key after a resource's deletion is durable (explicit or scheduled).
    on_destroy: RwLock<Vec<DestroyHook>>,
    /// Called with every committed change.
    on_change: RwLock<Vec<ChangeHook>>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// What a service does once one of its resources is gone (e.g. release what it held). Runs
/// under the resource's lock: it must be quick (spawn longer work) and must not register hooks.
pub type DestroyHook = Box<dyn Fn(&str) + Send + Sync>;

/// What a service does after each committed change. Runs under the resource's lock, before the
/// change is published: it must be quick and must not register hooks.
pub type ChangeHook = Box<dyn Fn(&Change) + Send + Sync>;

impl Home {
    /// Create a home, load its stored resources and register it with the sweeper.
    pub fn open(
        service: &str,
        key_name: QName,
        rtype: ResourceType,
        store: Store,
        sweeper: Arc<Sweeper>,
    ) -> Result<Arc<Home>, crate::store::StoreError> {
        let mut map = HashMap::new();
        let mut deadlines = Vec::new();
        let loaded = store.for_each(service, |row| match ResourceState::from_row(&rtype, &row) {
            Ok(st) => {
                if let Some(t) = st.termination_ms {
                    deadlines.push((t, st.key.clone()));
                }
                map.insert(row.key, Arc::new(Mutex::new(st)));
            }
            Err(e) => tracing::error!(service, key = %row.key, error = %e, "unreadable stored resource skipped"),
        })?;
        let home = Arc::new_cyclic(|weak: &std::sync::Weak<Home>| Home {
            service: service.to_string(),
            key_name,
            rtype,
            map: RwLock::new(map),
            store,
            index: sweeper.register(weak.clone() as std::sync::Weak<dyn super::sweeper::Expire>),
            sweeper: sweeper.clone(),
            on_destroy: RwLock::new(Vec::new()),
            on_change: RwLock::new(Vec::new()),
            changes: broadcast::channel(CHANGE_BUFFER).0,
        });
        for (t, k) in deadlines {
            home.sweeper.schedule(home.index, &k, None, Some(t));
        }
        tracing::info!(service, resources = home.len(), rows = loaded, "resource home loaded");
        Ok(home)
    }

    /// Adds a hook run after every destruction (after those added before it).
    pub fn on_destroy(&self, hook: DestroyHook) {
        self.on_destroy.write().unwrap().push(hook);
    }

    /// Adds a hook run after every committed create, update and destroy.
    pub fn on_change(&self, hook: ChangeHook) {
        self.on_change.write().unwrap().push(hook);
    }

    /// The store this home's resources live in (for service data kept beside them).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A receiver of every change committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Is anyone told of changes? (Changes are only worked out when so.)
    fn watched(&self) -> bool {
        self.changes.receiver_count() > 0 || !self.on_change.read().unwrap().is_empty()
    }

    /// Runs the change hooks and publishes the change; never waits for a subscriber.
    fn publish(&self, change: Change) {
        for hook in self.on_change.read().unwrap().iter() {
            hook(&change);
        }
        // Err only when nobody subscribes: nothing to do then.
        let _ = self.changes.send(Arc::new(change));
    }

    /// The change event of a new resource.
    fn created(&self, st: &ResourceState) -> Change {
        let props = self
            .rtype
            .props
            .iter()
            .zip(st.values.iter())
            .filter_map(|(d, v)| match d.source {
                Source::Stored if v.count > 0 => Some((d.name.clone(), v.clone())),
                Source::TerminationTime => Some((d.name.clone(), termination_values(&d.name, st.termination_ms))),
                _ => None,
            })
            .collect();
        Change { kind: ChangeKind::Create, key: st.key.clone(), props }
    }

    /// The change event of an update from `old` to `new`: only what differs.
    fn updated(&self, old: &ResourceState, new: &ResourceState) -> Change {
        let props = self
            .rtype
            .props
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d.source {
                Source::Stored if !same(&old.values[i], &new.values[i]) => Some((d.name.clone(), new.values[i].clone())),
                Source::TerminationTime if old.termination_ms != new.termination_ms => {
                    Some((d.name.clone(), termination_values(&d.name, new.termination_ms)))
                }
                _ => None,
            })
            .collect();
        Change { kind: ChangeKind::Update, key: new.key.clone(), props }
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn keys(&self) -> Vec<String> {
        self.map.read().unwrap().keys().cloned().collect()
    }

    /// Does a resource of this key exist (created and not destroyed)?
    pub fn contains(&self, key: &str) -> bool {
        self.map.read().unwrap().contains_key(key)
    }

    /// Visits every resource not locked at this moment, synchronously (a catalogue's quick
    /// pass); returns the keys of those that were locked, for the caller to [`Home::read`].
    /// `f` runs under the map's read lock: it must be quick.
    pub fn visit(&self, mut f: impl FnMut(&str, &ResourceState)) -> Vec<String> {
        let map = self.map.read().unwrap();
        let mut busy = Vec::new();
        for (k, e) in map.iter() {
            match e.try_lock() {
                Ok(st) if !st.destroyed => f(k, &st),
                Ok(_) => {}
                Err(_) => busy.push(k.clone()),
            }
        }
        busy
    }

    /// The EPR of a resource of this home, at `service_url`.
    pub fn epr(&self, service_url: &str, key: &str) -> Epr {
        Epr::with_key(service_url, self.key_name.clone(), key)
    }

    /// The resource key carried in the request's headers.
    pub fn key_from(&self, env: &Envelope, unknown: FaultType) -> Result<String, BaseFault> {
        match env.header_named(&self.key_name) {
            Some(h) => Ok(h.text_ref().trim().to_string()),
            None => Err(BaseFault::new(unknown, format!("resource key {} missing from the request headers", self.key_name))),
        }
    }

    fn entry(&self, key: &str) -> Option<Entry> {
        self.map.read().unwrap().get(key).cloned()
    }

    fn unknown(&self, key: &str, kind: FaultType) -> BaseFault {
        BaseFault::new(kind, format!("no {} resource with key '{key}'", self.service))
    }

    /// A fresh, unguessable resource key.
    pub fn new_key() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Create a resource (with a fresh key unless `state.key` is set); returns once durable.
    pub async fn create(&self, mut state: ResourceState) -> Result<String, BaseFault> {
        if state.key.is_empty() {
            state.key = Home::new_key();
        }
        let key = state.key.clone();
        let row = Row {
            service: self.service.clone(),
            key: key.clone(),
            termination_ms: state.termination_ms,
            record: state.to_record(&self.rtype),
        };
        self.store.put(row).await?;
        let t = state.termination_ms;
        let change = self.watched().then(|| self.created(&state));
        let entry = Arc::new(Mutex::new(state));
        // Published under the new resource's lock, so no change of it can be published first.
        let guard = change.as_ref().map(|_| entry.clone().try_lock_owned().expect("a new entry is unlocked"));
        self.map.write().unwrap().insert(key.clone(), entry);
        self.sweeper.schedule(self.index, &key, None, t);
        if let Some(c) = change {
            self.publish(c);
        }
        drop(guard);
        Ok(key)
    }

    /// Read a resource under its lock.
    pub async fn read<R>(
        &self,
        key: &str,
        unknown: FaultType,
        f: impl FnOnce(&ResourceState) -> Result<R, BaseFault>,
    ) -> Result<R, BaseFault> {
        let e = self.entry(key).ok_or_else(|| self.unknown(key, unknown))?;
        let st = e.lock().await;
        if st.destroyed {
            return Err(self.unknown(key, unknown));
        }
        f(&st)
    }

    /// Change a resource: `f` edits a copy; the copy is stored, then becomes the state. If `f`
    /// or the store fails, nothing changes.
    pub async fn update<R>(
        &self,
        key: &str,
        unknown: FaultType,
        f: impl FnOnce(&mut ResourceState) -> Result<R, BaseFault>,
    ) -> Result<R, BaseFault> {
        let e = self.entry(key).ok_or_else(|| self.unknown(key, unknown))?;
        let mut st = e.lock().await;
        if st.destroyed {
            return Err(self.unknown(key, unknown));
        }
        let mut next = st.clone();
        let r = f(&mut next)?;
        let row = Row {
            service: self.service.clone(),
            key: key.to_string(),
            termination_ms: next.termination_ms,
            record: next.to_record(&self.rtype),
        };
        self.store.put(row).await?;
        if next.termination_ms != st.termination_ms {
            self.sweeper.schedule(self.index, key, st.termination_ms, next.termination_ms);
        }
        let change = self.watched().then(|| self.updated(&st, &next));
        *st = next;
        if let Some(c) = change {
            self.publish(c);
        }
        Ok(r)
    }

    /// Destroy a resource: `check` may refuse (e.g. authorisation); the deletion is durable
    /// before the resource disappears.
    pub async fn destroy(
        &self,
        key: &str,
        unknown: FaultType,
        check: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
    ) -> Result<(), BaseFault> {
        let e = self.entry(key).ok_or_else(|| self.unknown(key, unknown))?;
        let mut st = e.lock().await;
        if st.destroyed {
            return Err(self.unknown(key, unknown));
        }
        check(&st)?;
        if let Err(err) = self.store.delete(&self.service, key).await {
            return Err(
                BaseFault::new(FaultType::ResourceNotDestroyed, format!("resource '{key}' not destroyed")).caused_by(err.into())
            );
        }
        st.destroyed = true;
        self.map.write().unwrap().remove(key);
        self.sweeper.schedule(self.index, key, st.termination_ms, None);
        for hook in self.on_destroy.read().unwrap().iter() {
            hook(key);
        }
        if self.watched() {
            self.publish(Change { kind: ChangeKind::Destroy, key: key.to_string(), props: Vec::new() });
        }
        Ok(())
    }

    /// Called by the sweeper: destroy the resource if its termination time has really passed.
    /// Returns false only when the store refused the deletion (the sweeper retries).
    pub(crate) async fn expire_now(&self, key: &str, now_ms: i64) -> bool {
        let r = self
            .destroy(key, FaultType::RlResourceUnknown, |st| match st.termination_ms {
                Some(t) if t <= now_ms => Ok(()),
                _ => Err(BaseFault::new(FaultType::Internal, "termination time moved")),
            })
            .await;
        match r {
            Ok(()) => {
                tracing::info!(service = %self.service, key, "resource destroyed: termination time reached");
                true
            }
            Err(e) if e.kind == FaultType::ResourceNotDestroyed => {
                tracing::error!(service = %self.service, key, error = %e, "scheduled destruction failed; will retry");
                false
            }
            Err(e) => {
                tracing::debug!(service = %self.service, key, error = %e, "scheduled destruction skipped");
                true
            }
        }
    }
}

impl super::sweeper::Expire for Home {
    fn expire<'a>(&'a self, key: &'a str, now_ms: i64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(self.expire_now(key, now_ms))
    }
}
