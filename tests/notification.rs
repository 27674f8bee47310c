//! WS-BaseNotification against a real vwsd: Subscribe on workspaces and counters, Notify
//! delivered to a real HTTP consumer on loopback (shape compared with a real GT 4.0 container's
//! Notify), commit order, Pause/Resume, subscription lifetime, GetCurrentMessage, a consumer
//! down for 10 s (missed messages delivered) or for good (subscription marked Failed, others
//! unaffected), kill -9 with live subscriptions, destroying the producer, bad input, and
//! https consumers over GSI transport (the kit's credentials; untrusted and misnamed consumer
//! certificates; with security off and on).
mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vws::soap::xml::{self, Element};

const WSNT_ACTION: &str = "http://docs.oasis-open.org/wsn/2004/06/wsn-WS-BaseNotification";
const SIMPLE: &str = "http://docs.oasis-open.org/wsn/2004/06/TopicExpression/Simple";
const CORE: &str = "http://www.globus.org/namespaces/2004/06/core";
const SUBS: &str = "SubscriptionManagerService";

/// Requests a consumer received: (request line and headers, body).
type Received = Arc<Mutex<Vec<(Vec<String>, String)>>>;

/// A notification consumer: a real HTTP/1.1 listener on loopback recording every request.
struct Consumer {
    addr: String,
    /// Over TLS (an https consumer), presenting a certificate.
    tls: bool,
    /// The subject DNs of the client certificates presented to a TLS consumer.
    peers: Arc<Mutex<Vec<String>>>,
    got: Received,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Consumer {
    fn start() -> Consumer {
        Consumer::start_at("127.0.0.1:0", Arc::new(Mutex::new(Vec::new())))
    }

    fn start_at(addr: &str, got: Received) -> Consumer {
        Consumer::listen(addr, got, None)
    }

    /// An https consumer on loopback presenting `cert` (PEM file) with `key`; it asks for the
    /// client's certificate and records its subject.
    fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Consumer {
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        b.set_certificate_chain_file(cert).unwrap();
        b.set_private_key_file(key, SslFiletype::PEM).unwrap();
        // Whatever the client presents is recorded, not judged (vwsd's host credential).
        b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
        Consumer::listen("127.0.0.1:0", Arc::new(Mutex::new(Vec::new())), Some(b.build()))
    }

    fn listen(addr: &str, got: Received, acceptor: Option<openssl::ssl::SslAcceptor>) -> Consumer {
        let deadline = Instant::now() + Duration::from_secs(10);
        let l = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let tls = acceptor.is_some();
        let (g, st, pe) = (got.clone(), stop.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        match &acceptor {
                            None => serve_one(c, &g),
                            Some(a) => {
                                // A client that refuses us after the handshake just closes.
                                if let Ok(s) = a.accept(c) {
                                    if let Some(p) = s.ssl().peer_certificate() {
                                        let dn: Vec<String> = p
                                            .subject_name()
                                            .entries()
                                            .map(|e| {
                                                format!(
                                                    "/{}={}",
                                                    e.object().nid().short_name().unwrap_or("?"),
                                                    e.data().to_string().unwrap()
                                                )
                                            })
                                            .collect();
                                        pe.lock().unwrap().push(dn.concat());
                                    }
                                    serve_one(s, &g);
                                }
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Consumer { addr, tls, peers, got, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/wsrf/services/NotificationConsumerService", self.addr)
    }

    /// Stop listening (the port is closed).
    fn shut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits for at least `n` messages (30 s at most); returns them parsed.
    fn wait(&self, n: usize, s: &Server) -> Vec<Element> {
        let start = Instant::now();
        while self.count() < n {
            assert!(start.elapsed() < Duration::from_secs(30), "got {} of {n} notifications; log: {}", self.count(), s.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        self.got.lock().unwrap().iter().map(|(_, b)| xml::parse(b, &Default::default()).expect("Notify parses")).collect()
    }
}

/// Reads one HTTP/1.1 request from `c`, records it in `got`, answers 200.
fn serve_one<S: Read + Write>(c: S, got: &Received) {
    let mut r = BufReader::new(c);
    let mut heads = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        heads.push(h.trim().to_string());
    }
    let mut body = vec![0; len];
    if !heads.is_empty() && r.read_exact(&mut body).is_ok() {
        got.lock().unwrap().push((heads, String::from_utf8_lossy(&body).into_owned()));
    }
    let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = r.get_mut().flush();
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn find<'a>(e: &'a Element, local: &str) -> Option<&'a Element> {
    if e.name.local == local {
        return Some(e);
    }
    e.elements().find_map(|c| find(c, local))
}

/// The text of NewValue's (or OldValue's) element.
fn value_of(notify: &Element, which: &str) -> Option<String> {
    find(notify, which).and_then(|v| v.first_element()).map(|e| e.text().trim().to_string())
}

fn subscribe_body(consumer: &str, topic_decl: &str, topic: &str, extra: &str) -> String {
    format!(
        "<wsnt:Subscribe xmlns:wsnt=\"{WSNT}\"><wsnt:ConsumerReference><wsa:Address>{consumer}</wsa:Address><wsa:ReferenceProperties><c:ConsumerKey xmlns:c=\"urn:consumer\">42</c:ConsumerKey></wsa:ReferenceProperties></wsnt:ConsumerReference>\
<wsnt:TopicExpression Dialect=\"{SIMPLE}\" {topic_decl}>{topic}</wsnt:TopicExpression><wsnt:UseNotify>true</wsnt:UseNotify>{extra}</wsnt:Subscribe>"
    )
}

fn subscribe(s: &Server, service: &str, key_header: &str, body: &str) -> HttpResponse {
    s.call(service, key_header, &format!("{WSNT_ACTION}/Subscribe"), body)
}

fn sub_key(r: &HttpResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    between(&r.body, &format!("SubscriptionKey xmlns:k0=\"{CORE}\">"), "<").expect("subscription key").to_string()
}

fn sub_header(key: &str) -> String {
    format!("<k:SubscriptionKey xmlns:k=\"{CORE}\">{key}</k:SubscriptionKey>")
}

fn sub_call(s: &Server, key: &str, action: &str, payload: &str) -> HttpResponse {
    s.call(SUBS, &sub_header(key), action, payload)
}

fn sub_property(s: &Server, key: &str, decl: &str, q: &str) -> HttpResponse {
    sub_call(
        s,
        key,
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" {decl}>{q}</wsrp:GetResourceProperty>"),
    )
}

fn sub_state(s: &Server, key: &str) -> String {
    let r = sub_property(s, key, &format!("xmlns:v=\"{VWS}\""), "v:SubscriptionState");
    assert_eq!(r.status, 200, "{}", r.body);
    between(&r.body, &format!("<v:SubscriptionState xmlns:v=\"{VWS}\">"), "<").unwrap_or_default().to_string()
}

fn add(s: &Server, key: &str, n: i64) {
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(key),
        "http://counter.com/CounterPortType/addRequest",
        &format!("<add xmlns=\"{COUNTER}\">{n}</add>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn counter_sub(s: &Server, counter: &str, consumer: &str) -> String {
    sub_key(&subscribe(
        s,
        "CounterService",
        &Server::counter_key_header(counter),
        &subscribe_body(consumer, "xmlns:c=\"http://counter.com\"", "c:Value", ""),
    ))
}

fn fault_element(r: &HttpResponse) -> Element {
    assert_eq!(r.status, 500, "{}", r.body);
    let env = xml::parse(&r.body, &Default::default()).unwrap();
    find(&env, "detail").and_then(|d| d.first_element()).cloned().unwrap_or_else(|| panic!("no fault detail: {}", r.body))
}

fn assert_fault(r: &HttpResponse, ns: &str, local: &str) -> Element {
    let f = fault_element(r);
    assert!(f.is(ns, local), "expected {{{ns}}}{local}, got {}: {}", f.name, r.body);
    assert!(f.child(WSBF, "Timestamp").is_some() && f.child(WSBF, "Description").is_some(), "a WS-BaseFault: {}", r.body);
    f
}

/// Element and attribute names of a document, depth first (namespace declarations left out).
fn shape(e: &Element, out: &mut Vec<String>, depth: usize) {
    let mut attrs: Vec<String> = e.attrs.iter().map(|a| a.name.clark()).collect();
    attrs.sort();
    out.push(format!("{}{} [{}]", " ".repeat(depth), e.name.clark(), attrs.join(" ")));
    for c in e.elements() {
        shape(c, out, depth + 1);
    }
}

#[test]
fn counter_changes_arrive_in_commit_order_shaped_as_gt4_notify() {
    let s = Server::start();
    let consumer = Consumer::start();
    let counter = s.create_counter("CounterService");
    let sub = counter_sub(&s, &counter, &consumer.url());
    for i in 1..=20 {
        add(&s, &counter, i);
    }
    let got = consumer.wait(20, &s);
    let values: Vec<i64> = got.iter().map(|n| value_of(n, "NewValue").unwrap().parse().unwrap()).collect();
    let expected: Vec<i64> = (1..=20)
        .scan(0, |acc, i| {
            *acc += i;
            Some(*acc)
        })
        .collect();
    assert_eq!(values, expected, "every change, in commit order");
    assert_eq!(value_of(&got[1], "OldValue").as_deref(), Some("1"), "OldValue is the value before the change");
    // HTTP and SOAP headers as GT 4.0 sends them.
    let (heads, body) = consumer.got.lock().unwrap()[0].clone();
    assert!(heads.iter().any(|h| h.eq_ignore_ascii_case(&format!("SOAPAction: \"{WSNT_ACTION}/Notify\""))), "{heads:?}");
    assert!(heads[0].starts_with("POST /wsrf/services/NotificationConsumerService HTTP/1.1"), "{heads:?}");
    assert!(body.contains(&format!("<wsa:To soapenv:mustUnderstand=\"0\">{}</wsa:To>", consumer.url())), "{body}");
    assert!(body.contains("<c:ConsumerKey xmlns:c=\"urn:consumer\" soapenv:mustUnderstand=\"0\">42</c:ConsumerKey>"), "{body}");
    // Same structure as the Notify a real GT 4.0 container sent for the same counter (plus OldValue).
    let recorded = std::fs::read_to_string(shared_dir().join("interop-recorded/gt4-server-notification/notify-1.http")).unwrap();
    let recorded = &recorded[recorded.find("<soapenv:Envelope").unwrap()..recorded.rfind("</soapenv:Envelope>").unwrap() + 19];
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    shape(&xml::parse(recorded, &Default::default()).unwrap(), &mut theirs, 0);
    shape(&got[0], &mut ours, 0);
    // vws adds wsrp:OldValue (the schema allows it; GT 4.0's counter sends NewValue only).
    let old = ours.iter().position(|l| l.ends_with("}OldValue []")).expect("OldValue sent");
    assert_eq!(ours.remove(old + 1).trim(), "{http://counter.com}Value []");
    ours.remove(old);
    assert_eq!(ours, theirs, "the Notify matches GT 4.0's");
    let producer = find(&got[0], "ProducerReference").unwrap();
    assert_eq!(find(producer, "Address").unwrap().text(), s.url("CounterService"));
    assert_eq!(find(producer, "CounterKey").unwrap().text(), counter);
    let topic = find(&got[0], "Topic").unwrap();
    assert_eq!(topic.resolve_qname(&topic.text()).unwrap().clark(), "{http://counter.com}Value");
    // The subscription's properties (GT 4.0's names).
    let r = sub_property(&s, &sub, &format!("xmlns:wsnt=\"{WSNT}\""), "wsnt:TopicExpression");
    assert!(r.body.contains("ns1:Value</ns2:TopicExpression>") && r.body.contains(SIMPLE), "{}", r.body);
    let r = sub_property(&s, &sub, &format!("xmlns:wsnt=\"{WSNT}\""), "wsnt:ConsumerReference");
    assert!(r.body.contains(&consumer.url()) && r.body.contains("ConsumerKey"), "{}", r.body);
    assert_eq!(sub_state(&s, &sub), "Active");
    // GetCurrentMessage: the last value, as GT 4.0 answers it.
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(&counter),
        &format!("{WSNT_ACTION}/GetCurrentMessage"),
        &format!("<GetCurrentMessage xmlns=\"{WSNT}\"><Topic Dialect=\"{SIMPLE}\" xmlns:ns1=\"http://counter.com\">ns1:Value</Topic></GetCurrentMessage>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("ResourcePropertyValueChangeNotificationType") && r.body.contains(">210</"), "{}", r.body);
    // The counter lists its topics.
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(&counter),
        &format!("{WSRP_ACTION}/GetMultipleResourceProperties"),
        &format!("<wsrp:GetMultipleResourceProperties xmlns:wsrp=\"{WSRP}\" xmlns:wsnt=\"{WSNT}\"><wsrp:ResourceProperty>wsnt:Topic</wsrp:ResourceProperty><wsrp:ResourceProperty>wsnt:FixedTopicSet</wsrp:ResourceProperty><wsrp:ResourceProperty>wsnt:TopicExpressionDialects</wsrp:ResourceProperty></wsrp:GetMultipleResourceProperties>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(">t:Value</wsnt:Topic>") && r.body.contains(">t:ResourceTermination</wsnt:Topic>"), "{}", r.body);
    assert!(
        r.body.contains("FixedTopicSet") && r.body.contains(&format!(">{SIMPLE}</wsnt:TopicExpressionDialects>")),
        "{}",
        r.body
    );
}

#[test]
fn a_deploy_is_seen_state_by_state() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("root.img");
    std::fs::write(&img, vec![7u8; 256 << 10]).unwrap();
    let s = Server::start_with(Conf {
        staging: format!("file_roots = [\"{}\"]\nprogress_interval_ms = 50\n", dir.path().display()),
        ..Default::default()
    });
    let consumer = Consumer::start();
    let desc = format!(
        "<virtualWorkspace xmlns=\"{VWS}\"><category><name>vm</name><vmm>qemu</vmm></category><hardware><disk name=\"root\"><image>file://{}</image></disk></hardware></virtualWorkspace>",
        img.display()
    );
    let key = s.create_workspace_from(&desc);
    let sub = sub_key(&subscribe(
        &s,
        "WorkspaceService",
        &Server::ws_key_header(&key),
        &subscribe_body(&consumer.url(), &format!("xmlns:n=\"{NIMBUS}\""), "n:CurrentState", ""),
    ));
    let r = s.call(
        "WorkspaceService",
        &Server::ws_key_header(&key),
        &format!("{VWS}/WorkspaceManagerPortType/deployRequest"),
        &format!("<deploy xmlns=\"{VWS}\"/>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = consumer.wait(2, &s);
    let states: Vec<(Option<String>, String)> =
        got.iter().map(|n| (value_of(n, "OldValue"), value_of(n, "NewValue").unwrap())).collect();
    assert_eq!(
        states,
        vec![(Some("Unstaged".to_string()), "Staging".to_string()), (Some("Staging".to_string()), "Staged".to_string())],
        "{}",
        s.log()
    );
    // SetTerminationTime on the workspace: nothing for a CurrentState subscriber.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(consumer.count(), 2);
    let r = sub_call(&s, &sub, &format!("{WSRL_ACTION}/Destroy"), &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn pause_resume_lifetime_and_destroy_of_a_subscription() {
    let s = Server::start();
    let consumer = Consumer::start();
    let counter = s.create_counter("CounterService");
    let sub = counter_sub(&s, &counter, &consumer.url());
    add(&s, &counter, 3);
    consumer.wait(1, &s);
    let r = sub_call(&s, &sub, &format!("{WSNT_ACTION}/PauseSubscription"), &format!("<PauseSubscription xmlns=\"{WSNT}\"/>"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("PauseSubscriptionResponse"), "{}", r.body);
    assert_eq!(sub_state(&s, &sub), "Paused");
    add(&s, &counter, 5);
    let r = sub_call(&s, &sub, &format!("{WSNT_ACTION}/ResumeSubscription"), &format!("<ResumeSubscription xmlns=\"{WSNT}\"/>"));
    assert_eq!(r.status, 200, "{}", r.body);
    add(&s, &counter, 6);
    let got = consumer.wait(2, &s);
    assert_eq!(value_of(&got[1], "NewValue").as_deref(), Some("14"), "the change made while paused is not sent");
    assert_eq!(consumer.count(), 2);
    // Lifetime: SetTerminationTime, then Destroy.
    let when = vws::soap::time::format_ms(vws::soap::time::now_ms() + 600_000);
    let r = sub_call(
        &s,
        &sub,
        &format!("{WSRL_ACTION}/SetTerminationTime"),
        &format!("<wsrl:SetTerminationTime xmlns:wsrl=\"{WSRL}\"><wsrl:RequestedTerminationTime>{when}</wsrl:RequestedTerminationTime></wsrl:SetTerminationTime>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = sub_call(&s, &sub, &format!("{WSRL_ACTION}/Destroy"), &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"));
    assert_eq!(r.status, 200, "{}", r.body);
    add(&s, &counter, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(consumer.count(), 2, "nothing after the subscription is destroyed");
    let r = sub_call(&s, &sub, &format!("{WSNT_ACTION}/PauseSubscription"), &format!("<PauseSubscription xmlns=\"{WSNT}\"/>"));
    assert_fault(&r, WSNT, "ResourceUnknownFault");
    // A subscription whose termination time passes is swept.
    let soon = vws::soap::time::format_ms(vws::soap::time::now_ms() + 1500);
    let sub2 = sub_key(&subscribe(
        &s,
        "CounterService",
        &Server::counter_key_header(&counter),
        &subscribe_body(
            &consumer.url(),
            "xmlns:c=\"http://counter.com\"",
            "c:Value",
            &format!("<wsnt:InitialTerminationTime>{soon}</wsnt:InitialTerminationTime>"),
        ),
    ));
    let start = Instant::now();
    while sub_call(
        &s,
        &sub2,
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!(
            "<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:wsnt=\"{WSNT}\">wsnt:UseNotify</wsrp:GetResourceProperty>"
        ),
    )
    .status
        == 200
    {
        assert!(start.elapsed() < Duration::from_secs(20), "subscription not swept");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A counter whose subscribed consumer saw its first change (1) and then went down while three
/// more were made (2, 3, 4); returns the counter, the subscription, and the consumer's address
/// and inbox.
fn changes_while_the_consumer_is_down(s: &Server) -> (String, String, String, Received) {
    let mut consumer = Consumer::start();
    let counter = s.create_counter("CounterService");
    let sub = counter_sub(s, &counter, &consumer.url());
    add(s, &counter, 1);
    consumer.wait(1, s);
    let (addr, got) = (consumer.addr.clone(), consumer.got.clone());
    consumer.shut();
    for i in 2..=4 {
        add(s, &counter, i);
    }
    (counter, sub, addr, got)
}

#[test]
fn a_consumer_down_for_10_s_gets_the_missed_messages_when_it_returns() {
    let s = Server::start_with(Conf {
        host: "\n[notification]\nretry_initial_ms = 100\nretry_max_ms = 1000\ngive_up_secs = 60\n".into(),
        ..Default::default()
    });
    let (_counter, _sub, addr, got) = changes_while_the_consumer_is_down(&s);
    std::thread::sleep(Duration::from_secs(10));
    let consumer = Consumer::start_at(&addr, got);
    let got = consumer.wait(4, &s);
    let values: Vec<String> = got.iter().map(|n| value_of(n, "NewValue").unwrap()).collect();
    assert_eq!(values, ["1", "3", "6", "10"], "missed messages arrive, in order");
}

#[test]
fn a_consumer_that_stays_down_fails_its_subscription_and_delays_no_one() {
    let s = Server::start_with(Conf {
        host: "\n[notification]\nretry_initial_ms = 100\nretry_max_ms = 400\ngive_up_secs = 2\n".into(),
        ..Default::default()
    });
    // A port nobody listens on.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/consumer", l.local_addr().unwrap())
    };
    let live = Consumer::start();
    let counter = s.create_counter("CounterService");
    let failing = counter_sub(&s, &counter, &dead);
    counter_sub(&s, &counter, &live.url());
    for i in 1..=5 {
        add(&s, &counter, i);
    }
    assert_eq!(live.wait(5, &s).len(), 5, "the live consumer gets everything");
    let start = Instant::now();
    while sub_state(&s, &failing) != "Failed" {
        assert!(start.elapsed() < Duration::from_secs(20), "not failed: {}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = sub_property(&s, &failing, &format!("xmlns:v=\"{VWS}\""), "v:deliveryFailure");
    assert!(r.body.contains("unreachable") && r.body.contains(&dead), "says why: {}", r.body);
    assert!(s.log().contains("subscription failed"), "logged");
    // Resume re-activates it and sends the current value.
    let back = Consumer::start_at(dead.trim_start_matches("http://").trim_end_matches("/consumer"), Default::default());
    let r =
        sub_call(&s, &failing, &format!("{WSNT_ACTION}/ResumeSubscription"), &format!("<ResumeSubscription xmlns=\"{WSNT}\"/>"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sub_state(&s, &failing), "Active");
    let got = back.wait(1, &s);
    assert_eq!(value_of(&got[0], "NewValue").as_deref(), Some("15"));
}

#[test]
fn subscriptions_survive_kill9_and_notifications_continue() {
    let mut s = Server::start();
    let consumer = Consumer::start();
    let counter = s.create_counter("CounterService");
    let sub = counter_sub(&s, &counter, &consumer.url());
    add(&s, &counter, 2);
    consumer.wait(1, &s);
    s.kill9();
    s.restart();
    add(&s, &counter, 3);
    let got = consumer.wait(2, &s);
    assert_eq!(value_of(&got[1], "NewValue").as_deref(), Some("5"));
    assert_eq!(value_of(&got[1], "OldValue").as_deref(), Some("2"));
    assert_eq!(sub_state(&s, &sub), "Active");
}

#[test]
fn notifications_queued_for_a_down_consumer_at_kill9_are_delivered_after_restart() {
    let mut s = Server::start_with(Conf {
        host: "\n[notification]\nretry_initial_ms = 200\nretry_max_ms = 1000\ngive_up_secs = 120\n".into(),
        ..Default::default()
    });
    let (counter, sub, addr, got) = changes_while_the_consumer_is_down(&s);
    // Let the worker queue them all and fail a first attempt.
    std::thread::sleep(Duration::from_millis(500));
    s.kill9();
    let consumer = Consumer::start_at(&addr, got);
    s.restart();
    let got = consumer.wait(4, &s);
    let values: Vec<String> = got.iter().map(|n| value_of(n, "NewValue").unwrap()).collect();
    assert_eq!(values, ["1", "3", "6", "10"], "the queued messages arrive after the restart, in order");
    add(&s, &counter, 5);
    let got = consumer.wait(5, &s);
    assert_eq!(value_of(&got[4], "NewValue").as_deref(), Some("15"), "and new changes follow them");
    assert_eq!(value_of(&got[4], "OldValue").as_deref(), Some("10"));
    assert_eq!(sub_state(&s, &sub), "Active");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(consumer.count(), 5, "nothing delivered twice");
    let rows: i64 = rusqlite::Connection::open(s.data_dir().join("vws.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "delivered messages leave the outbox");
    wait_rows(&s, "notify_change", 0);
}

/// Rows of a store table, read while vwsd runs.
fn rows(s: &Server, table: &str) -> i64 {
    rusqlite::Connection::open(s.data_dir().join("vws.db"))
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Waits (10 s at most) until `table` has `n` rows.
fn wait_rows(s: &Server, table: &str, n: i64) {
    let start = Instant::now();
    while rows(s, table) != n {
        assert!(start.elapsed() < Duration::from_secs(10), "{table}: {} rows, not {n}; log: {}", rows(s, table), s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn store_rows_go_once_delivered_and_with_their_subscriptions() {
    let s = Server::start();
    let consumer = Consumer::start();
    let counter = s.create_counter("CounterService");
    let live = counter_sub(&s, &counter, &consumer.url());
    let paused = counter_sub(&s, &counter, &consumer.url());
    let r = sub_call(&s, &paused, &format!("{WSNT_ACTION}/PauseSubscription"), &format!("<PauseSubscription xmlns=\"{WSNT}\"/>"));
    assert_eq!(r.status, 200, "{}", r.body);
    for i in 1..=20 {
        add(&s, &counter, i);
    }
    let got = consumer.wait(20, &s);
    let values: Vec<String> = got.iter().map(|n| value_of(n, "NewValue").unwrap()).collect();
    let expected: Vec<String> = (1..=20).map(|i| (i * (i + 1) / 2).to_string()).collect();
    assert_eq!(values, expected, "the live subscription gets all, in order; the paused one nothing");
    let ids: std::collections::HashSet<String> = got.iter().map(|n| find(n, "MessageID").unwrap().text()).collect();
    assert_eq!(ids.len(), 20, "one MessageID per message");
    // One row per change, whatever the number of subscriptions, gone once every one passed it.
    wait_rows(&s, "notify_change", 0);
    wait_rows(&s, "notify_cursor", 0);
    assert_eq!(rows(&s, "notify_mark"), 1, "both subscriptions at the stream's mark");
    for sub in [&live, &paused] {
        let r = sub_call(&s, sub, &format!("{WSRL_ACTION}/Destroy"), &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_rows(&s, "notify_mark", 0);
    add(&s, &counter, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rows(&s, "notify_change"), 0, "no subscription: nothing written");
    assert_eq!(rows(&s, "notify_cursor") + rows(&s, "outbox"), 0);
}

#[test]
fn a_consumer_behind_more_than_queue_len_gets_the_current_value_and_rows_stay_bounded() {
    let s = Server::start_with(Conf {
        host: "\n[notification]\nqueue_len = 3\nretry_initial_ms = 100\nretry_max_ms = 300\ngive_up_secs = 60\n".into(),
        ..Default::default()
    });
    let mut consumer = Consumer::start();
    let counter = s.create_counter("CounterService");
    counter_sub(&s, &counter, &consumer.url());
    add(&s, &counter, 1);
    consumer.wait(1, &s);
    let (addr, got) = (consumer.addr.clone(), consumer.got.clone());
    consumer.shut();
    for i in 2..=30 {
        add(&s, &counter, i);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(rows(&s, "notify_change") <= 5, "changes beyond queue_len are not kept: {}", rows(&s, "notify_change"));
    let consumer = Consumer::start_at(&addr, got);
    let start = Instant::now();
    let values = loop {
        let got = consumer.wait(2, &s);
        let values: Vec<i64> = got.iter().map(|n| value_of(n, "NewValue").unwrap().parse().unwrap()).collect();
        if values.last() == Some(&465) {
            break values;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no resync to the current value: {values:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(values.windows(2).all(|w| w[0] < w[1]), "in order: {values:?}");
    assert!(values.len() <= 6, "changes beyond queue_len were replaced by one resync: {values:?}");
    wait_rows(&s, "notify_change", 0);
    wait_rows(&s, "outbox", 0);
}

#[test]
fn destroying_the_producer_sends_termination_and_ends_its_subscriptions() {
    let s = Server::start();
    let consumer = Consumer::start();
    let counter = s.create_counter("CounterServiceRW");
    let hdr = Server::counter_key_header(&counter);
    let value_sub = sub_key(&subscribe(
        &s,
        "CounterServiceRW",
        &hdr,
        &subscribe_body(&consumer.url(), "xmlns:c=\"http://counter.com\"", "c:Value", ""),
    ));
    let term_sub = sub_key(&subscribe(
        &s,
        "CounterServiceRW",
        &hdr,
        &subscribe_body(&consumer.url(), &format!("xmlns:l=\"{WSRL}\""), "l:ResourceTermination", ""),
    ));
    // SetResourceProperties is a change too.
    let r = s.call(
        "CounterServiceRW",
        &hdr,
        &format!("{WSRP_ACTION}/SetResourceProperties"),
        &format!("<SetResourceProperties xmlns=\"{WSRP}\"><Update><c:Value xmlns:c=\"{COUNTER}\">9</c:Value></Update></SetResourceProperties>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    consumer.wait(1, &s);
    let r =
        s.call("CounterServiceRW", &hdr, &format!("{WSRL_ACTION}/Destroy"), &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"));
    assert_eq!(r.status, 200, "{}", r.body);
    let got = consumer.wait(2, &s);
    let t = find(&got[1], "Topic").unwrap();
    assert_eq!(t.resolve_qname(&t.text()).unwrap().local, "ResourceTermination");
    assert!(find(find(&got[1], "Message").unwrap(), "TerminationTime").is_some());
    let start = Instant::now();
    for sub in [value_sub, term_sub] {
        loop {
            let r = sub_property(&s, &sub, &format!("xmlns:wsnt=\"{WSNT}\""), "wsnt:UseNotify");
            if r.status == 500 {
                assert_fault(&r, WSRP, "ResourceUnknownFault");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "subscription outlived its producer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn bad_subscribe_and_get_current_message_input_gets_ws_base_faults() {
    // Security off and no trusted CAs: https consumers cannot be reached.
    let none = tempfile::tempdir().unwrap();
    let missing = none.path().join("no-certificates");
    let s =
        Server::start_with(Conf { host: format!("\n[security]\ncert_dir = \"{}\"\n", missing.display()), ..Default::default() });
    let consumer = Consumer::start();
    let counter = s.create_counter("CounterService");
    let hdr = Server::counter_key_header(&counter);
    let c = "xmlns:c=\"http://counter.com\"";
    let f = assert_fault(
        &subscribe(&s, "CounterService", &hdr, &subscribe_body(&consumer.url(), c, "c:NoSuchTopic", "")),
        WSNT,
        "TopicNotSupportedFault",
    );
    assert!(f.child(WSBF, "Description").unwrap().text().contains("NoSuchTopic"));
    let concrete = subscribe_body(&consumer.url(), c, "c:Value", "")
        .replace(SIMPLE, "http://docs.oasis-open.org/wsn/2004/06/TopicExpression/Concrete");
    assert_fault(&subscribe(&s, "CounterService", &hdr, &concrete), WSNT, "TopicPathDialectUnknownFault");
    assert_fault(
        &subscribe(&s, "CounterService", &hdr, &subscribe_body(&consumer.url(), "", "x:Value", "")),
        WSNT,
        "InvalidTopicExpressionFault",
    );
    assert_fault(
        &subscribe(&s, "CounterService", &hdr, &subscribe_body(&consumer.url(), c, "c:Value c:Other", "")),
        WSNT,
        "InvalidTopicExpressionFault",
    );
    for bad in ["ftp://127.0.0.1/x", "not a url"] {
        let f = assert_fault(
            &subscribe(&s, "CounterService", &hdr, &subscribe_body(bad, c, "c:Value", "")),
            WSNT,
            "SubscribeCreationFailedFault",
        );
        assert!(f.child(WSBF, "Description").unwrap().text().contains("ConsumerReference"));
    }
    let f = assert_fault(
        &subscribe(&s, "CounterService", &hdr, &subscribe_body("https://127.0.0.1:1/x", c, "c:Value", "")),
        WSNT,
        "SubscribeCreationFailedFault",
    );
    let why = f.child(WSBF, "Description").unwrap().text();
    assert!(
        why.contains("ConsumerReference")
            && why.contains("https")
            && why.contains("security.cert_dir")
            && why.contains(&missing.display().to_string()),
        "says why at Subscribe: {why}"
    );
    let no_consumer = format!("<wsnt:Subscribe xmlns:wsnt=\"{WSNT}\"><wsnt:TopicExpression Dialect=\"{SIMPLE}\" {c}>c:Value</wsnt:TopicExpression></wsnt:Subscribe>");
    assert_fault(&subscribe(&s, "CounterService", &hdr, &no_consumer), WSNT, "SubscribeCreationFailedFault");
    let past = subscribe_body(
        &consumer.url(),
        c,
        "c:Value",
        "<wsnt:InitialTerminationTime>2001-01-01T00:00:00Z</wsnt:InitialTerminationTime>",
    );
    assert_fault(&subscribe(&s, "CounterService", &hdr, &past), WSNT, "UnacceptableInitialTerminationTimeFault");
    assert_fault(
        &subscribe(&s, "CounterService", &Server::counter_key_header("nope"), &subscribe_body(&consumer.url(), c, "c:Value", "")),
        WSNT,
        "ResourceUnknownFault",
    );
    let gcm = |topic: &str, decl: &str| {
        s.call(
            "CounterService",
            &hdr,
            &format!("{WSNT_ACTION}/GetCurrentMessage"),
            &format!(
                "<GetCurrentMessage xmlns=\"{WSNT}\"><Topic Dialect=\"{SIMPLE}\" {decl}>{topic}</Topic></GetCurrentMessage>"
            ),
        )
    };
    assert_fault(&gcm("l:ResourceTermination", &format!("xmlns:l=\"{WSRL}\"")), WSNT, "NoCurrentMessageOnTopicFault");
    assert_fault(&gcm("c:NoSuchTopic", c), WSNT, "TopicNotSupportedFault");
    // Nothing was made by the refused requests.
    assert!(s.db_dump().iter().all(|r| r.0 != SUBS), "no subscription stored");
    assert!(s.log().contains("TopicNotSupportedFault") || s.log().contains("fault"), "refusals are logged");
}

#[test]
fn vws_watch_prints_each_change_and_ends_its_subscriptions_on_sigterm() {
    let s = Server::start();
    let key = s.create_workspace();
    let dir = tempfile::tempdir().unwrap();
    let epr = dir.path().join("ws.epr");
    let e =
        vws::soap::epr::Epr::with_key(s.url("WorkspaceService"), vws::soap::xml::QName::new(VWS, "WorkspaceKey"), key.clone());
    std::fs::write(&epr, e.to_file_xml()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vws"))
        .arg("--epr")
        .arg(&epr)
        .args(["watch", "CurrentState", "Comment", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("watching CurrentState, Comment on "), "{line}");
    let set = |v: &str| {
        let r = s.call(
            "WorkspaceService",
            &Server::ws_key_header(&key),
            &format!("{WSRP_ACTION}/SetResourceProperties"),
            &format!("<SetResourceProperties xmlns=\"{WSRP}\"><Update><c:Comment xmlns:c=\"{NIMBUS}\">{v}</c:Comment></Update></SetResourceProperties>"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    set("hello");
    set("world");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l.trim().to_string());
    }
    let ts = |l: &str| l.len() > 13 && l.as_bytes()[2] == b':' && l.as_bytes()[8] == b'.';
    assert!(ts(&lines[0]) && lines[0].ends_with(" Comment (none) → hello"), "{lines:?}");
    assert!(ts(&lines[1]) && lines[1].ends_with(" Comment hello → world"), "{lines:?}");
    let subs = || s.db_dump().iter().filter(|r| r.0 == SUBS).count();
    assert_eq!(subs(), 2, "one subscription per property");
    std::process::Command::new("kill").arg("-15").arg(child.id().to_string()).status().unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    assert_eq!(subs(), 0, "the watch destroyed its subscriptions");
}

// ---- https consumers (GSI transport) ------------------------------------------------------

/// The GSI test kit (CA, trust directory, host and user credentials), made once per process.
fn kit() -> &'static gsi::Kit {
    static KIT: std::sync::OnceLock<gsi::Kit> = std::sync::OnceLock::new();
    KIT.get_or_init(|| gsi::bring_up(&gsi::kit_dir(), &gsi::port()))
}

/// vwsd without security (plain HTTP listener) that reaches https consumers: the kit's trust
/// directory and host credential in `[security]`, and short delivery retries.
fn https_delivering_server() -> Server {
    let k = kit();
    Server::start_with(Conf {
        host: format!(
            "\n[security]\nhost_cert = \"{}\"\nhost_key = \"{}\"\ncert_dir = \"{}\"\n\n[notification]\nretry_initial_ms = 100\nretry_max_ms = 400\ngive_up_secs = 2\n",
            k.var("GSI_HOST_CERT"),
            k.var("GSI_HOST_KEY"),
            k.var("X509_CERT_DIR"),
        ),
        ..Default::default()
    })
}

/// A self-signed certificate for `localhost` / 127.0.0.1 (trusted by nobody), as PEM files.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509NameBuilder, X509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("O", "Grid").unwrap();
    name.append_entry_by_text("OU", "GlobusTest").unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
    let san = SubjectAlternativeName::new().dns("localhost").ip("127.0.0.1").build(&b.x509v3_context(None, None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let (cert, keyf) = (dir.join("untrusted.pem"), dir.join("untrusted.key"));
    std::fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&keyf, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, keyf)
}

fn wait_failed(s: &Server, sub: &str) {
    let start = Instant::now();
    while sub_state(s, sub) != "Failed" {
        assert!(start.elapsed() < Duration::from_secs(20), "not failed: {}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_https_consumer_gets_each_change_over_gsi_transport() {
    let k = kit();
    let s = https_delivering_server();
    let consumer = Consumer::start_tls(&k.path("GSI_HOST_CERT"), &k.path("GSI_HOST_KEY"));
    assert!(consumer.url().starts_with("https://127.0.0.1:"));
    let counter = s.create_counter("CounterService");
    let sub = counter_sub(&s, &counter, &consumer.url());
    for i in 1..=3 {
        add(&s, &counter, i);
    }
    let got = consumer.wait(3, &s);
    let values: Vec<String> = got.iter().map(|n| value_of(n, "NewValue").unwrap()).collect();
    assert_eq!(values, ["1", "3", "6"], "every change, in order, over TLS");
    let (heads, body) = consumer.got.lock().unwrap()[0].clone();
    assert!(heads.iter().any(|h| h.eq_ignore_ascii_case(&format!("SOAPAction: \"{WSNT_ACTION}/Notify\""))), "{heads:?}");
    assert!(body.contains(&format!("<wsa:To soapenv:mustUnderstand=\"0\">{}</wsa:To>", consumer.url())), "{body}");
    let peers = consumer.peers.lock().unwrap().clone();
    assert!(
        !peers.is_empty() && peers.iter().all(|p| *p == k.var("GSI_HOST_DN")),
        "vwsd presents its host credential: {peers:?}"
    );
    assert_eq!(sub_state(&s, &sub), "Active");
    // The stored ConsumerReference is the https one.
    let r = sub_property(&s, &sub, &format!("xmlns:wsnt=\"{WSNT}\""), "wsnt:ConsumerReference");
    assert!(r.body.contains(&consumer.url()), "{}", r.body);
}

#[test]
fn an_https_consumer_with_an_untrusted_or_misnamed_certificate_is_sent_nothing_and_fails() {
    let k = kit();
    let s = https_delivering_server();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let untrusted = Consumer::start_tls(&cert, &key);
    // Issued by the trusted CA, but to a user: it does not name the host.
    let (ucert, ukey) = k.user();
    let misnamed = Consumer::start_tls(&ucert, &ukey);
    let good = Consumer::start_tls(&k.path("GSI_HOST_CERT"), &k.path("GSI_HOST_KEY"));
    let counter = s.create_counter("CounterService");
    let bad1 = counter_sub(&s, &counter, &untrusted.url());
    let bad2 = counter_sub(&s, &counter, &misnamed.url());
    counter_sub(&s, &counter, &good.url());
    add(&s, &counter, 5);
    assert_eq!(value_of(&good.wait(1, &s)[0], "NewValue").as_deref(), Some("5"), "the trusted consumer is not held up");
    wait_failed(&s, &bad1);
    wait_failed(&s, &bad2);
    for (sub, c, why) in [(&bad1, &untrusted, "certificate refused"), (&bad2, &misnamed, "does not match 127.0.0.1")] {
        assert_eq!(c.count(), 0, "no message reaches a consumer whose certificate is refused");
        let r = sub_property(&s, sub, &format!("xmlns:v=\"{VWS}\""), "v:deliveryFailure");
        assert!(
            r.body.contains("certificate refused") && r.body.contains(why) && r.body.contains(&c.url()),
            "says why: {}",
            r.body
        );
    }
}

/// One request over GSI transport to vwsd's HTTPS listener, presenting the kit's RFC proxy.
fn gsi_call(s: &Server, service: &str, key_header: &str, action: &str, payload: &str) -> HttpResponse {
    let proxy = kit().path("GSI_PROXY_RFC");
    let tcp = std::net::TcpStream::connect(&s.https_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let tls = gsi::proxy_connector(Some(&proxy)).configure().unwrap().verify_hostname(false).connect("localhost", tcp).unwrap();
    let body = envelope(&s.https_url(service), action, key_header, payload);
    let req = format!(
        "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.https_addr,
        body.len()
    );
    let mut r = BufReader::new(tls);
    r.get_mut().write_all(req.as_bytes()).unwrap();
    read_response(&mut r).unwrap_or_else(|e| panic!("no answer ({e}); log: {}", s.log()))
}

#[test]
fn with_security_on_https_consumers_get_the_listeners_credential_and_trust() {
    let k = kit();
    let s = Server::start_with(Conf {
        security: k.security_toml(&k.path("X509_CERT_DIR"), ""),
        host: "\n[notification]\nretry_initial_ms = 100\nretry_max_ms = 400\ngive_up_secs = 2\n".into(),
        ..Default::default()
    });
    let consumer = Consumer::start_tls(&k.path("GSI_HOST_CERT"), &k.path("GSI_HOST_KEY"));
    let r = gsi_call(
        &s,
        "CounterService",
        "",
        "http://counter.com/CounterPortType/createCounterRequest",
        "<createCounter xmlns=\"http://counter.com\"/>",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let counter = between(&r.body, "CounterKey xmlns:k0=\"http://counter.com\">", "<").expect("counter key").to_string();
    let hdr = Server::counter_key_header(&counter);
    let body = subscribe_body(&consumer.url(), "xmlns:c=\"http://counter.com\"", "c:Value", "");
    let sub = sub_key(&gsi_call(&s, "CounterService", &hdr, &format!("{WSNT_ACTION}/Subscribe"), &body));
    for i in [2, 3] {
        let r = gsi_call(
            &s,
            "CounterService",
            &hdr,
            "http://counter.com/CounterPortType/addRequest",
            &format!("<add xmlns=\"{COUNTER}\">{i}</add>"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let got = consumer.wait(2, &s);
    let values: Vec<String> = got.iter().map(|n| value_of(n, "NewValue").unwrap()).collect();
    assert_eq!(values, ["2", "5"]);
    let producer = find(&got[0], "ProducerReference").unwrap();
    assert_eq!(find(producer, "Address").unwrap().text(), s.https_url("CounterService"));
    let peers = consumer.peers.lock().unwrap().clone();
    assert!(!peers.is_empty() && peers.iter().all(|p| *p == k.var("GSI_HOST_DN")), "{peers:?}");
    let r = gsi_call(
        &s,
        SUBS,
        &sub_header(&sub),
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!(
            "<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:v=\"{VWS}\">v:SubscriptionState</wsrp:GetResourceProperty>"
        ),
    );
    assert!(r.body.contains(">Active</v:SubscriptionState>"), "{}", r.body);
}
