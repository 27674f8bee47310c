//! The request context of log lines: who asked what (peer, service, caller DN, then wsa:Action
//! and resource key; operation, outcome and duration for the access line), carried by a tokio
//! task-local for the life of the request's future ([`ContextLayer`]) and written into a log
//! line only when one is written: the text formatter ([`RequestText`]) puts it where a
//! `request{…}:` span would be, the JSON one ([`RequestJson`]) as the line's `"span"` object.
//!
//! This replaces a `tracing` span per request, which cost about 7,000 instructions of a
//! GetResourceProperty's 76,000 (9 %): the span is created in the registry and its fields are
//! formatted into a string as it is created and again as each field is recorded, whether or not
//! any line is ever written for that request (almost never: the access line is at debug). Here a
//! request stores three reference-counted pointers and two strings, and formats nothing until a
//! line is written. The lines read exactly as the span's did (a unit test compares them).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use axum::extract::Request;
use compact_str::CompactString;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::conn::Peer;
use crate::security::Caller;

tokio::task_local! {
    static REQUEST: RefCell<RequestContext>;
}

/// What the log lines of one request say about it.
pub struct RequestContext {
    peer: Option<Arc<str>>,
    caller: Option<Arc<Result<Caller, String>>>,
    service: CompactString,
    action: Option<String>,
    key: Option<String>,
    /// Operation (when known), outcome, duration in ms: set only when the access line is on.
    access: Option<(Option<String>, &'static str, f64)>,
}

impl RequestContext {
    /// The context of `req`: peer and caller from its connection, service from its path.
    pub fn of(req: &Request) -> RequestContext {
        let service = req.uri().path().strip_prefix("/wsrf/services/").unwrap_or("-").trim_end_matches('/');
        let peer = req.extensions().get::<Peer>();
        RequestContext {
            peer: peer.map(|p| p.addr_text.clone()),
            caller: peer.map(|p| p.caller.clone()),
            service: CompactString::new(service),
            action: None,
            key: None,
            access: None,
        }
    }

    fn dn(&self) -> Option<&str> {
        self.caller.as_ref().map(|c| match &**c {
            Ok(c) => c.name(),
            Err(_) => "refused",
        })
    }

    /// The fields in the order the span wrote them: those known at its start, then those
    /// recorded later in the order they were recorded.
    fn fields(&self) -> impl Iterator<Item = (&'static str, FieldValue<'_>)> {
        let (operation, outcome, duration) = match &self.access {
            Some((op, outcome, ms)) => (op.as_deref(), Some(*outcome), Some(*ms)),
            None => (None, None, None),
        };
        [
            ("peer", self.peer.as_deref().map(FieldValue::Bare)),
            ("service", Some(FieldValue::Str(&self.service))),
            ("dn", self.dn().map(FieldValue::Str)),
            ("action", self.action.as_deref().map(FieldValue::Str)),
            ("key", self.key.as_deref().map(FieldValue::Str)),
            ("operation", operation.map(FieldValue::Str)),
            ("outcome", outcome.map(FieldValue::Str)),
            ("duration_ms", duration.map(FieldValue::Float)),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
    }

    /// `request{name=value …}: ` as the default text formatter writes a span with these fields.
    fn write_text(&self, w: &mut Writer<'_>) -> fmt::Result {
        let ansi = w.has_ansi_escapes();
        let (bold, dimmed, italic, reset) = if ansi { ("\x1b[1m", "\x1b[2m", "\x1b[3m", "\x1b[0m") } else { ("", "", "", "") };
        write!(w, "{bold}request{reset}{bold}{{{reset}")?;
        for (i, (name, value)) in self.fields().enumerate() {
            if i > 0 {
                w.write_char(' ')?;
            }
            write!(w, "{italic}{name}{reset}{dimmed}={reset}")?;
            match value {
                FieldValue::Bare(s) => w.write_str(s)?,
                FieldValue::Str(s) if !ansi && super::logfields::debug_is_verbatim(s) => write!(w, "\"{s}\"")?,
                FieldValue::Str(s) => write!(w, "{s:?}")?,
                FieldValue::Float(f) => write!(w, "{f:?}")?,
            }
        }
        write!(w, "{bold}}}{reset}{dimmed}:{reset} ")
    }

    /// The `"span"` object of a JSON line: the fields and `"name":"request"`.
    fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, value) in self.fields() {
            let v = match value {
                FieldValue::Bare(s) | FieldValue::Str(s) => serde_json::Value::from(s),
                FieldValue::Float(f) => serde_json::Value::from(f),
            };
            m.insert(name.into(), v);
        }
        m.insert("name".into(), "request".into());
        serde_json::Value::Object(m)
    }
}

#[derive(Clone, Copy)]
enum FieldValue<'a> {
    /// Written as `Display` writes it (the span's `peer = %addr`).
    Bare(&'a str),
    /// A string field: quoted.
    Str(&'a str),
    Float(f64),
}

/// Runs `f` on the current request's context, if this runs inside a request.
fn with_current<R>(f: impl FnOnce(&mut RequestContext) -> R) -> Option<R> {
    REQUEST.try_with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c))).ok().flatten()
}

/// Records the request's wsa:Action and resource key for its log lines.
pub fn set_action_key(action: Option<&str>, key: Option<&str>) {
    with_current(|c| {
        c.action = action.map(str::to_string);
        c.key = key.map(str::to_string);
    });
}

/// Records the operation, outcome and duration for the access line.
pub fn set_access(operation: Option<&str>, outcome: &'static str, duration_ms: f64) {
    with_current(|c| c.access = Some((operation.map(str::to_string), outcome, duration_ms)));
}

/// Runs every request with its [`RequestContext`]: every log line written while its future is
/// polled (panics caught inside included) carries its fields. The response body is not
/// wrapped (nothing logs while hyper writes it).
#[derive(Clone)]
pub struct ContextLayer;

impl<S> tower::Layer<S> for ContextLayer {
    type Service = ContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ContextService(inner)
    }
}

#[derive(Clone)]
pub struct ContextService<S>(S);

impl<S> tower::Service<Request> for ContextService<S>
where
    S: tower::Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tokio::task::futures::TaskLocalFuture<RefCell<RequestContext>, S::Future>;
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: Request) -> Self::Future {
        let ctx = RequestContext::of(&req);
        REQUEST.scope(RefCell::new(ctx), self.0.call(req))
    }
}

/// The text log line: tracing-subscriber's default (full) format, with the request context
/// where its span would be.
pub struct RequestText {
    time: bool,
    inner: Format<Full, ()>,
}

impl RequestText {
    /// `time`: start each line with the time (as the default format does).
    pub fn new(time: bool) -> RequestText {
        RequestText { time, inner: Format::default().without_time().with_level(false) }
    }
}

fn level_text(level: &Level, ansi: bool) -> (&'static str, &'static str) {
    let (text, colour) = match *level {
        Level::TRACE => ("TRACE", "\x1b[35m"),
        Level::DEBUG => ("DEBUG", "\x1b[34m"),
        Level::INFO => (" INFO", "\x1b[32m"),
        Level::WARN => (" WARN", "\x1b[33m"),
        Level::ERROR => ("ERROR", "\x1b[31m"),
    };
    (text, if ansi { colour } else { "" })
}

impl<S, N> FormatEvent<S, N> for RequestText
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let ansi = w.has_ansi_escapes();
        if self.time {
            if ansi {
                w.write_str("\x1b[2m")?;
            }
            if SystemTime.format_time(&mut w).is_err() {
                w.write_str("<unknown time>")?;
            }
            w.write_str(if ansi { "\x1b[0m " } else { " " })?;
        }
        let (level, colour) = level_text(event.metadata().level(), ansi);
        write!(w, "{colour}{level}{} ", if ansi { "\x1b[0m" } else { "" })?;
        with_current(|c| c.write_text(&mut w)).unwrap_or(Ok(()))?;
        self.inner.format_event(ctx, w, event)
    }
}

/// The JSON log line: tracing-subscriber's JSON format (as configured), with the request context
/// as its `"span"` object when the line is written inside a request.
pub struct RequestJson(pub Format<Json>);

impl<S, N> FormatEvent<S, N> for RequestJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // A `tracing` span of its own: the JSON format writes that one as "span".
        let span = if ctx.lookup_current().is_some() { None } else { with_current(|c| c.json()) };
        let Some(span) = span else {
            return self.0.format_event(ctx, w, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // `{…}\n` → `{…,"span":{…}}\n` (a line of an object, as the formatter writes it).
        match line.trim_end().strip_suffix('}') {
            Some(head) => {
                let sep = if head.trim_end().ends_with('{') { "" } else { "," };
                writeln!(w, "{head}{sep}\"span\":{span}}}")
            }
            _ => w.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::logfields::test_writer::Buf;

    const PEER: &str = "[::1]:8443";
    const DN: &str = "/O=Grid/CN=\"quoted\" \\ é\tx";
    const ACTION: &str = "http://docs.oasis-open.org/wsrf/GetResourceProperty";

    fn lines() {
        let err = std::io::Error::other("disk on fire");
        tracing::info!(count = -4i64, ok = true, error = &err as &dyn std::error::Error, "done: {}", "x\u{1b}[31m");
        tracing::warn!(what = ?Some("dbg"), plain = "p", "second \"line\"");
        tracing::info!(json = "{\"span\":{}}", "a \"span\": in the text");
        tracing::debug!(target: "vws::request", status = 200u16, "request done");
    }

    /// The lines as the request span (the code before this module) wrote them.
    fn with_span() {
        let span = tracing::info_span!(
            "request",
            peer = %PEER,
            service = "WorkspaceService",
            action = tracing::field::Empty,
            dn = DN,
            operation = tracing::field::Empty,
            key = tracing::field::Empty,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty
        );
        let _g = span.enter();
        span.record("action", ACTION);
        span.record("key", "a\nb");
        span.record("operation", "GetResourceProperty");
        span.record("outcome", "ok");
        span.record("duration_ms", 0.25);
        lines();
    }

    /// The same lines written in a request context.
    fn with_context() {
        let caller = Caller { dn: Some(DN.into()), ..Caller::default() };
        let ctx = RequestContext {
            peer: Some(PEER.into()),
            caller: Some(Arc::new(Ok(caller))),
            service: "WorkspaceService".into(),
            action: None,
            key: None,
            access: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(REQUEST.scope(RefCell::new(ctx), async {
            set_action_key(Some(ACTION), Some("a\nb"));
            set_access(Some("GetResourceProperty"), "ok", 0.25);
            lines();
        }));
    }

    #[test]
    fn text_lines_read_as_the_request_span_wrote_them() {
        for ansi in [false, true] {
            let (a, b) = (Buf::default(), Buf::default());
            let sub = |buf: &Buf| tracing_subscriber::fmt().with_max_level(Level::DEBUG).with_ansi(ansi).with_writer(buf.clone());
            tracing::subscriber::with_default(sub(&a).without_time().finish(), with_span);
            tracing::subscriber::with_default(sub(&b).event_format(RequestText::new(false)).finish(), with_context);
            let (span, ctx) = (a.text(), b.text());
            assert_eq!(span.lines().count(), 4, "{span}");
            assert!(span.contains("request{peer=[::1]:8443") || ansi, "{span}");
            assert_eq!(ctx, span, "ansi {ansi}");
            // With the time: the same lines after it.
            let c = Buf::default();
            tracing::subscriber::with_default(sub(&c).event_format(RequestText::new(true)).finish(), with_context);
            for (timed, untimed) in c.text().lines().zip(span.lines()) {
                let (time, rest) = timed.split_once(' ').unwrap();
                let time = time.trim_start_matches("\x1b[2m").trim_end_matches("\x1b[0m");
                assert!(time.len() == 27 && time.ends_with('Z'), "{timed}");
                assert_eq!(rest, untimed);
            }
        }
    }

    #[test]
    fn json_lines_carry_the_context_as_the_span_object() {
        let json = |buf: &Buf| {
            tracing_subscriber::fmt()
                .with_max_level(Level::DEBUG)
                .with_writer(buf.clone())
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
        };
        let (a, b) = (Buf::default(), Buf::default());
        tracing::subscriber::with_default(json(&a).finish(), with_span);
        let f = Format::default().json().flatten_event(true).with_current_span(true).with_span_list(false);
        tracing::subscriber::with_default(json(&b).event_format(RequestJson(f)).finish(), with_context);
        let parse = |s: String| -> Vec<serde_json::Value> {
            s.lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v.as_object_mut().unwrap().remove("timestamp");
                    v
                })
                .collect()
        };
        let (span, ctx) = (parse(a.text()), parse(b.text()));
        assert_eq!(span.len(), 4);
        assert_eq!(span[3]["span"]["peer"], PEER);
        assert_eq!(span[3]["span"]["duration_ms"], 0.25);
        assert_eq!(ctx[2]["span"]["dn"], DN);
        assert_eq!(ctx, span);
        // Outside a request: no span object, the line as the JSON format writes it.
        let c = Buf::default();
        tracing::subscriber::with_default(json(&c).event_format(RequestJson(Format::default().json())).finish(), lines);
        assert!(parse(c.text()).iter().all(|v| v.get("span").is_none()));
    }

    #[test]
    fn outside_a_request_setting_fields_does_nothing_and_lines_have_no_context() {
        set_action_key(Some(ACTION), None);
        set_access(None, "ok", 1.0);
        let b = Buf::default();
        let sub = tracing_subscriber::fmt().with_ansi(false).with_writer(b.clone()).event_format(RequestText::new(false));
        tracing::subscriber::with_default(sub.finish(), || tracing::info!("plain"));
        assert_eq!(b.text(), " INFO vws::server::reqlog::tests: plain\n");
    }
}
