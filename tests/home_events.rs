//! A resource home's change events and hooks, against a real store: one event per committed
//! create, SetResourceProperties, SetTerminationTime and destroy (the WSRF operations
//! themselves), in commit order, naming the properties that changed with their new values;
//! nothing for a refused change; several hooks of each kind all run; a subscriber that never
//! reads does not hold up updates and is told how much it missed.

// Guards return the crate's BaseFault, as the library's own code does (see src/lib.rs).
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use vws::soap::ns::{WSRL, WSRP};
use vws::soap::xml::{parse, Element, QName};
use vws::store::Store;
use vws::wsrf::home::{ChangeKind, CHANGE_BUFFER};
use vws::wsrf::{lifetime, properties, Home, LifetimePolicy, PropertyDecl, ResourceState, ResourceType, Sweeper};

const NS: &str = "urn:test:events";

fn rtype() -> ResourceType {
    ResourceType::new(
        QName::new(NS, "Props"),
        vec![PropertyDecl::read_only(NS, "Fixed"), PropertyDecl::modifiable(NS, "Comment", 0, Some(1))],
    )
}

fn open(dir: &std::path::Path) -> Arc<Home> {
    let store = Store::open(dir).unwrap();
    Home::open("EventService", QName::new(NS, "Key"), rtype(), store, Sweeper::new()).unwrap()
}

async fn create(home: &Home, comment: &str) -> String {
    let mut st = ResourceState::new(&home.rtype, Default::default(), Some(4_000_000_000_000));
    st.set(&home.rtype, NS, "Fixed", vec![format!("<t:Fixed xmlns:t=\"{NS}\">f</t:Fixed>")]);
    st.set(&home.rtype, NS, "Comment", vec![comment_xml(comment)]);
    home.create(st).await.unwrap()
}

fn comment_xml(text: &str) -> String {
    format!("<t:Comment xmlns:t=\"{NS}\">{text}</t:Comment>")
}

fn el(xml: &str) -> Element {
    parse(xml, &Default::default()).unwrap()
}

async fn set_comment(home: &Home, key: &str, text: &str) -> Result<String, vws::wsrf::BaseFault> {
    let req = el(&format!(
        "<wsrp:SetResourceProperties xmlns:wsrp=\"{WSRP}\"><wsrp:Update>{}</wsrp:Update></wsrp:SetResourceProperties>",
        comment_xml(text)
    ));
    properties::set(home, key, &req, |_, _| Ok(()), |_| {}).await
}

fn names(c: &vws::wsrf::home::Change) -> Vec<String> {
    c.names().map(|q| q.local.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_committed_change_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path());
    let mut rx = home.subscribe();
    let comment = QName::new(NS, "Comment");
    let tt = QName::new(WSRL, "TerminationTime");

    let key = create(&home, "first").await;
    set_comment(&home, &key, "second").await.unwrap();
    let stt = el(&format!(
        "<wsrl:SetTerminationTime xmlns:wsrl=\"{WSRL}\"><wsrl:RequestedTerminationTime>2099-01-02T03:04:05.006Z</wsrl:RequestedTerminationTime></wsrl:SetTerminationTime>"
    ));
    lifetime::set_termination_time(&home, &key, &stt, &LifetimePolicy::default(), |_| Ok(())).await.unwrap();
    // A refused change commits nothing and publishes nothing.
    let refused = properties::set(
        &home,
        &key,
        &el(&format!(
            "<wsrp:SetResourceProperties xmlns:wsrp=\"{WSRP}\"><wsrp:Update>{}</wsrp:Update></wsrp:SetResourceProperties>",
            comment_xml("third")
        )),
        |_, _| Err(vws::wsrf::BaseFault::new(vws::wsrf::FaultType::AuthorizationFailed, "no")),
        |_| {},
    )
    .await;
    assert!(refused.is_err());
    lifetime::destroy(&home, &key, |_| Ok(())).await.unwrap();

    let c = rx.recv().await.unwrap();
    assert_eq!((c.kind, c.key.as_str()), (ChangeKind::Create, key.as_str()));
    assert_eq!(names(&c), ["Fixed", "Comment", "TerminationTime"], "every set property, in document order");
    assert_eq!(&*c.get(&comment).unwrap().xml, comment_xml("first"));

    let c = rx.recv().await.unwrap();
    assert_eq!((c.kind, c.key.as_str()), (ChangeKind::Update, key.as_str()));
    assert_eq!(names(&c), ["Comment"], "only what changed");
    assert_eq!(&*c.get(&comment).unwrap().xml, comment_xml("second"));

    let c = rx.recv().await.unwrap();
    assert_eq!(c.kind, ChangeKind::Update);
    assert_eq!(names(&c), ["TerminationTime"]);
    let v = c.get(&tt).unwrap();
    assert_eq!(v.count, 1);
    assert!(v.xml.contains(">2099-01-02T03:04:05.006Z<"), "{}", v.xml);

    let c = rx.recv().await.unwrap();
    assert_eq!((c.kind, c.key.as_str(), c.props.len()), (ChangeKind::Destroy, key.as_str(), 0));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "nothing else was published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hook_runs_and_a_lagging_subscriber_does_not_block_updates() {
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path());
    let destroyed = Arc::new(AtomicUsize::new(0));
    let changed = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let d = destroyed.clone();
        home.on_destroy(Box::new(move |_| {
            d.fetch_add(1, Ordering::SeqCst);
        }));
        let c = changed.clone();
        home.on_change(Box::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let mut idle = home.subscribe(); // never reads until the end
    let mut live = home.subscribe();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            match live.recv().await {
                Ok(c) => seen.push((c.kind, c.key.clone(), c.get(&QName::new(NS, "Comment")).map(|v| v.xml.to_string()))),
                Err(RecvError::Lagged(_)) => panic!("a reader that keeps up never lags"),
                Err(RecvError::Closed) => return seen,
            }
        }
    });

    // Enough updates, over several resources at once, to overflow the idle subscriber's buffer.
    const RESOURCES: usize = 8;
    let per = CHANGE_BUFFER / RESOURCES + 8;
    let mut keys = Vec::new();
    for i in 0..RESOURCES {
        keys.push(create(&home, &format!("r{i}-0")).await);
    }
    let work = async {
        let mut tasks = tokio::task::JoinSet::new();
        for key in keys.clone() {
            let home = home.clone();
            tasks.spawn(async move {
                for n in 1..=per {
                    set_comment(&home, &key, &format!("{key}-{n}")).await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), work).await.expect("updates are never held up by a subscriber");
    for key in &keys {
        lifetime::destroy(&home, key, |_| Ok(())).await.unwrap();
    }
    let total = RESOURCES * (1 + per + 1);
    assert_eq!(changed.load(Ordering::SeqCst), 2 * total, "both change hooks saw every change");
    assert_eq!(destroyed.load(Ordering::SeqCst), 2 * RESOURCES, "both destroy hooks ran for every destroy");

    // The idle subscriber lost the oldest events and is told how many, then gets the newest.
    match idle.recv().await {
        Err(RecvError::Lagged(n)) => assert_eq!(n as usize, total - CHANGE_BUFFER),
        other => panic!("expected a lag report, got {other:?}"),
    }
    let mut rest = 0;
    while let Ok(c) = idle.try_recv() {
        rest += 1;
        let _ = c;
    }
    assert_eq!(rest, CHANGE_BUFFER);

    drop(home);
    let seen = reader.await.unwrap();
    assert_eq!(seen.len(), total, "the reader that kept up saw every change");
    for key in &keys {
        // Per resource, in commit order: create, each update in turn, destroy.
        let mine: Vec<_> = seen.iter().filter(|s| &s.1 == key).collect();
        assert_eq!(mine.len(), per + 2);
        assert_eq!(mine[0].0, ChangeKind::Create);
        for (n, s) in mine[1..=per].iter().enumerate() {
            assert_eq!(s.0, ChangeKind::Update);
            assert_eq!(s.2.as_deref(), Some(comment_xml(&format!("{key}-{}", n + 1)).as_str()));
        }
        assert_eq!(mine[per + 1].0, ChangeKind::Destroy);
    }
}
