//! `vws watch`: subscribe to resource property changes (WS-BaseNotification) and print each
//! Notify as it arrives. A small HTTP/1.1 consumer endpoint listens on this host; the
//! subscriptions are destroyed when the watch stops (Ctrl-C / SIGTERM).

use super::{Client, ClientError};
use crate::soap::epr::Epr;
use crate::soap::ns;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::{self, Element, Limits, QName};
use crate::wsrf::messages::{parse_content, Destroy, GetResourceProperty};
use crate::wsrf::notify_messages::{ConsumerReference, Subscribe};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::Write;

/// The topics a resource publishes (its `wsnt:Topic` property).
pub async fn topics(c: &Client, epr: &Epr) -> Result<Vec<QName>, ClientError> {
    let r = c.invoke(epr, &GetResourceProperty { name: QName::new(ns::WSNT, "Topic") }).await?;
    let values = parse_content(&r.content).map_err(|m| ClientError::BadAnswer { status: 200, msg: m })?;
    Ok(values.elements().filter(|e| e.is(ns::WSNT, "Topic")).filter_map(|e| e.resolve_qname(&e.text()).ok()).collect())
}

/// Which topic a command-line name means: `{ns}local`, `prefix:local`, or a local name that
/// exactly one published topic has.
pub fn pick_topic(arg: &str, published: &[QName]) -> Result<QName, ClientError> {
    if arg.starts_with('{') || arg.contains(':') {
        return super::parse_qname_arg(arg);
    }
    let matching: Vec<&QName> = published.iter().filter(|q| q.local == arg).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ClientError::Usage(format!(
            "the resource publishes no topic named '{arg}' (topics: {})",
            published.iter().map(|q| q.local.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        _ => Err(ClientError::Usage(format!("'{arg}' is ambiguous; use {{namespace}}{arg}"))),
    }
}

/// The address this host has towards `url`'s host (the consumer address vwsd can reach).
fn local_ip_towards(url: &str) -> std::net::IpAddr {
    let host = url.parse::<hyper::Uri>().ok().and_then(|u| {
        let h = u.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
        Some((h, u.port_u16().unwrap_or(80)))
    });
    let guess = host.and_then(|(h, p)| {
        use std::net::ToSocketAddrs;
        let to = (h.as_str(), p).to_socket_addrs().ok()?.next()?;
        let any: std::net::SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
        let s = std::net::UdpSocket::bind(any).ok()?;
        s.connect(to).ok()?;
        Some(s.local_addr().ok()?.ip())
    });
    guess.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// A value element as one line: its text, `(nil)`, or `child[...]` parts for structured values
/// (also how `vws get` prints a property).
pub fn flatten(e: &Element) -> String {
    if e.is_nil() {
        return "(nil)".into();
    }
    if e.elements().next().is_none() && e.attrs.is_empty() {
        return e.text().trim().to_string();
    }
    let mut parts: Vec<String> = e.attrs.iter().map(|a| format!("{}={}", a.name.local, a.value)).collect();
    for c in e.elements() {
        parts.push(format!("{}[{}]", c.name.local, flatten(c)));
    }
    parts.join(" ")
}

fn values(holder: Option<&Element>) -> Option<String> {
    let h = holder?;
    let v: Vec<String> = h.elements().map(flatten).collect();
    Some(if v.is_empty() { "(none)".into() } else { v.join(", ") })
}

/// One printed line for a Notify body (None when it is not a Notify).
pub fn describe(body: &[u8]) -> Option<String> {
    let env = xml::parse_bytes(body, &Limits::default()).ok()?;
    let notify = env.child(ns::SOAPENV, "Body")?.child(ns::WSNT, "Notify")?;
    let mut lines = Vec::new();
    for m in notify.elements().filter(|e| e.is(ns::WSNT, "NotificationMessage")) {
        let topic = m.child(ns::WSNT, "Topic").and_then(|t| t.resolve_qname(&t.text()).ok());
        let name = topic.as_ref().map(|t| t.local.clone()).unwrap_or_else(|| "?".into());
        let msg = m.child(ns::WSNT, "Message");
        let change = msg.and_then(|m| m.child(ns::WSRP, "ResourcePropertyValueChangeNotification"));
        let what = match change {
            Some(c) => {
                let new = values(c.child(ns::WSRP, "NewValue")).unwrap_or_else(|| "(none)".into());
                match values(c.child(ns::WSRP, "OldValue")) {
                    Some(old) => format!("{old} → {new}"),
                    None => format!("→ {new}"),
                }
            }
            None => msg.map(|m| m.elements().map(flatten).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
        };
        let now = time::OffsetDateTime::now_utc();
        lines.push(format!("{:02}:{:02}:{:02}.{:03} {name} {what}", now.hour(), now.minute(), now.second(), now.millisecond()));
    }
    Some(lines.join("\n"))
}

/// Subscribe `epr`'s resource to `props` (CurrentState when empty), print every change on
/// stdout until Ctrl-C / SIGTERM, then destroy the subscriptions. `listen`: the consumer's
/// bind address (default: this host's address towards the service, any port).
pub async fn watch(c: &Client, epr: &Epr, props: &[String], listen: Option<&str>) -> Result<i32, ClientError> {
    let published = topics(c, epr).await?;
    let names: Vec<String> = if props.is_empty() { vec!["CurrentState".into()] } else { props.to_vec() };
    let wanted = names.iter().map(|p| pick_topic(p, &published)).collect::<Result<Vec<_>, _>>()?;
    let bind = match listen {
        Some(a) => a.to_string(),
        None => std::net::SocketAddr::new(local_ip_towards(&epr.address), 0).to_string(),
    };
    let listener =
        tokio::net::TcpListener::bind(&bind).await.map_err(|e| ClientError::Usage(format!("listening on {bind}: {e}")))?;
    let local = listener.local_addr().map_err(|e| ClientError::Usage(e.to_string()))?;
    let consumer = format!("http://{local}/vws-watch");
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    if let Some(line) = describe(&body) {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{line}");
                        let _ = out.flush();
                    }
                    let mut w = XmlWriter::with_capacity(128);
                    w.start("soapenv:Envelope", &[("xmlns:soapenv", ns::SOAPENV)])
                        .empty("soapenv:Body", &[])
                        .end("soapenv:Envelope");
                    let empty = w.into_string();
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("Content-Type", "text/xml; charset=utf-8")
                            .body(Full::new(Bytes::from(empty)))
                            .expect("response"),
                    )
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            });
        }
    });
    let mut subs = Vec::new();
    for t in &wanted {
        let req = Subscribe {
            consumer: ConsumerReference::new(consumer.clone()),
            topic: t.clone(),
            use_notify: Some(true),
            initial_termination_ms: None,
        };
        match c.invoke(epr, &req).await {
            Ok(r) => subs.push(r.subscription),
            Err(e) => {
                end(c, &subs).await;
                return Err(e);
            }
        }
    }
    eprintln!(
        "watching {} on {} (consumer {consumer}); Ctrl-C to stop",
        wanted.iter().map(|q| q.local.as_str()).collect::<Vec<_>>().join(", "),
        epr.address
    );
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| ClientError::Usage(e.to_string()))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    end(c, &subs).await;
    server.abort();
    Ok(0)
}

/// Destroy the subscriptions (best effort: they also end with their termination time).
async fn end(c: &Client, subs: &[Epr]) {
    for s in subs {
        if let Err(e) = c.invoke(s, &Destroy).await {
            eprintln!("destroying subscription at {}: {e}", s.address);
        }
    }
}
