//! Interop replay suite: every request recorded from real GT 4.0 software under
//! `shared/interop-recorded/` is replayed against a running `vwsd`, and every answer is checked
//! element by element (see `interop/README.md` for what is replayed and how answers are compared).
//!
//! * `gt4-wsrf-clients/`: the bytes unmodified GT 4.0 Java clients wrote (against a recording
//!   stub). Each is replayed byte for byte against a fresh workspace; only the key header, the
//!   host (Host header, wsa:To) and the chunk size change. The stub's answers are placeholders
//!   ("42" everywhere), so structure is compared with them and values are checked by type.
//! * `gt4-server/`: request/answer pairs of a live GT 4.0 container hosting GT's counter sample.
//!   They are replayed in the recorded order against vws' `CounterService` / `CounterServiceRW`
//!   and vws' answers are compared with GT4's by [`domcmp::compare`], with a per-exchange list of
//!   the differences that are expected (each one named and explained there).

mod common;
use common::*;
use domcmp::{Allow, Check, Normalizer};
use http_msg::Message;
use std::path::PathBuf;
use vws::soap::ns::{WSA_ANONYMOUS, WSA_FAULT_ACTION, XSI};
use vws::soap::xml::{parse, Element, Limits, QName};

mod http_msg {
    //! Raw HTTP/1.1 messages as recorded: start line, headers in their order and spelling, body
    //! and its framing; rebuilt with the same framing, so a replay differs from the recording only
    //! where a substitution is made on purpose (checked by a lossless round trip).

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Framing {
        Chunked,
        Length,
        UntilClose,
    }

    #[derive(Clone, Debug)]
    pub struct Message {
        pub start: String,
        pub headers: Vec<(String, String)>,
        /// The de-chunked body.
        pub body: String,
        pub framing: Framing,
    }

    impl Message {
        pub fn parse(raw: &[u8]) -> Message {
            let text = std::str::from_utf8(raw).expect("recorded HTTP message is UTF-8");
            let (head, rest) = text.split_once("\r\n\r\n").expect("HTTP header block");
            let mut lines = head.split("\r\n");
            let start = lines.next().expect("start line").to_string();
            let headers: Vec<(String, String)> = lines
                .map(|l| {
                    let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("header line {l:?}"));
                    (k.to_string(), v.to_string())
                })
                .collect();
            let mut m = Message { start, headers, body: String::new(), framing: Framing::UntilClose };
            if m.header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                m.framing = Framing::Chunked;
                let mut r = rest;
                loop {
                    let (size, after) = r.split_once("\r\n").expect("chunk size line");
                    let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
                    if n == 0 {
                        assert_eq!(after, "\r\n", "no trailers / nothing after the last chunk");
                        break;
                    }
                    m.body.push_str(&after[..n]);
                    r = after[n..].strip_prefix("\r\n").expect("CRLF after chunk data");
                }
            } else if let Some(len) = m.header("Content-Length") {
                let len: usize = len.trim().parse().expect("Content-Length");
                m.framing = Framing::Length;
                assert_eq!(rest.len(), len, "Content-Length matches the recorded body");
                m.body = rest.to_string();
            } else {
                m.body = rest.to_string();
            }
            m
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }

        /// Replace a header's value in place (same position, same spelling of the name).
        pub fn set_header(&mut self, name: &str, value: &str) {
            let h = self.headers.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)).expect("header present");
            h.1 = value.to_string();
        }

        /// The message on the wire: chunked bodies as one chunk plus the last chunk (as GT 4.0's
        /// commons-httpclient wrote them), Content-Length recomputed for length-framed bodies.
        pub fn to_bytes(&self) -> Vec<u8> {
            let mut out = String::new();
            out.push_str(&self.start);
            out.push_str("\r\n");
            for (k, v) in &self.headers {
                let v = if self.framing == Framing::Length && k.eq_ignore_ascii_case("Content-Length") {
                    self.body.len().to_string()
                } else {
                    v.clone()
                };
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            match self.framing {
                Framing::Chunked => {
                    if !self.body.is_empty() {
                        out.push_str(&format!("{:x}\r\n{}\r\n", self.body.len(), self.body));
                    }
                    out.push_str("0\r\n\r\n");
                }
                Framing::Length | Framing::UntilClose => out.push_str(&self.body),
            }
            out.into_bytes()
        }

        /// Status code of a response.
        pub fn status(&self) -> u16 {
            self.start.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line")
        }
    }
}

mod domcmp {
    //! A normalizing comparer over two DOM trees (`vws::soap::xml::Element`): the recorded answer
    //! ("recorded") and vws' answer ("vws"). It compares element QNames, their order, attributes
    //! and text. Values are normalized first: per-side literal substitutions (hosts, resource
    //! keys), then any xsd:dateTime becomes `{dateTime}`, any UUID `{uuid}` (`uuid:{uuid}`), and a
    //! prefixed QName value (`wsa:Reply`, `soapenv:Server`) its `{ns}local` form. Every difference
    //! that is expected must be named by an [`Allow`]; anything else is reported with its path.

    use vws::soap::xml::{Element, QName};

    /// An expected difference between the recorded answer and vws'.
    #[derive(Clone, Debug)]
    pub enum Allow {
        /// Elements dropped from both sides wherever they appear: content only the recorded peer
        /// writes (Java stack traces, Axis exceptionName/hostname, notification topics).
        Ignore(QName),
        /// vws may write this element where the recording has none; compared when both have it.
        OptionalInVws(QName),
        /// The recorded element named `.0` stands where vws writes one named `.1`.
        Renamed(QName, QName),
        /// Content (attributes, text, children) of the recorded element so named is a placeholder
        /// and is not compared; vws' content is checked separately by the caller.
        Opaque(QName),
        /// Text of vws' element so named is not compared with the recording but must pass `Check`.
        Value(QName, Check),
    }

    /// A check on the text of vws' element.
    #[derive(Clone, Debug)]
    pub enum Check {
        NonEmpty,
        DateTime,
        /// Must contain the recorded element's (normalized) text.
        ContainsRecorded,
        /// Must contain each of these strings.
        Contains(Vec<String>),
        OneOf(Vec<String>),
        Exactly(String),
        Custom(&'static str, fn(&Element) -> bool),
    }

    impl Check {
        fn passes(&self, recorded: &Element, vws: &Element, n: &Normalizer) -> Result<(), String> {
            let t = vws.text();
            let t = t.trim();
            let ok = match self {
                Check::NonEmpty => !t.is_empty(),
                Check::DateTime => vws::wsrf::time::parse_ms(t).is_some(),
                Check::ContainsRecorded => {
                    let r = n.value(recorded, &recorded.text(), Side::Recorded);
                    n.value(vws, t, Side::Vws).contains(&r)
                }
                Check::Contains(parts) => parts.iter().all(|p| t.contains(p.as_str())),
                Check::OneOf(vals) => vals.iter().any(|v| v == t),
                Check::Exactly(v) => v == t,
                Check::Custom(_, f) => f(vws),
            };
            let what = match self {
                Check::Custom(d, _) => d.to_string(),
                other => format!("{other:?}"),
            };
            if ok {
                Ok(())
            } else {
                Err(format!("text {t:?} fails check {what} (recorded: {:?})", recorded.text().trim()))
            }
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Side {
        Recorded,
        Vws,
    }

    /// Literal substitutions applied to every text and attribute value before comparing.
    #[derive(Clone, Debug, Default)]
    pub struct Normalizer {
        pub recorded: Vec<(String, String)>,
        pub vws: Vec<(String, String)>,
    }

    pub fn is_uuid(s: &str) -> bool {
        s.len() == 36
            && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
    }

    impl Normalizer {
        pub fn value(&self, el: &Element, raw: &str, side: Side) -> String {
            let mut s = raw.trim().to_string();
            let subst = if side == Side::Recorded { &self.recorded } else { &self.vws };
            for (from, to) in subst {
                assert!(from.len() >= 8, "substitution {from:?} too short to be unambiguous");
                s = s.replace(from.as_str(), to);
            }
            if s.contains('T') && vws::wsrf::time::parse_ms(&s).is_some() {
                return "{dateTime}".into();
            }
            if let Some(u) = s.strip_prefix("uuid:") {
                if is_uuid(u) {
                    return "uuid:{uuid}".into();
                }
            }
            if is_uuid(&s) {
                return "{uuid}".into();
            }
            if let Some((p, l)) = s.split_once(':') {
                if vws::soap::xml::is_ncname(p) && vws::soap::xml::is_ncname(l) {
                    if let Some(ns) = el.lookup_prefix(p) {
                        return format!("{{{ns}}}{l}");
                    }
                }
            }
            s
        }
    }

    struct Ctx<'a> {
        allow: &'a [Allow],
        norm: &'a Normalizer,
        out: Vec<String>,
    }

    impl Ctx<'_> {
        fn ignored(&self, q: &QName) -> bool {
            self.allow.iter().any(|a| matches!(a, Allow::Ignore(x) if x == q))
        }
        fn optional(&self, q: &QName) -> bool {
            self.allow.iter().any(|a| matches!(a, Allow::OptionalInVws(x) if x == q))
        }
        fn opaque(&self, q: &QName) -> bool {
            self.allow.iter().any(|a| matches!(a, Allow::Opaque(x) if x == q))
        }
        /// The name vws should use where the recording has `q`.
        fn vws_name(&self, q: &QName) -> QName {
            self.allow
                .iter()
                .find_map(|a| match a {
                    Allow::Renamed(r, v) if r == q => Some(v.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| q.clone())
        }
        fn value_check(&self, q: &QName) -> Option<&Check> {
            self.allow.iter().find_map(|a| match a {
                Allow::Value(x, c) if x == q => Some(c),
                _ => None,
            })
        }

        fn attrs(&self, el: &Element, side: Side) -> Vec<(QName, String)> {
            let mut v: Vec<(QName, String)> =
                el.attrs.iter().map(|a| (a.name.clone(), self.norm.value(el, &a.value, side))).collect();
            v.sort();
            v
        }

        fn element(&mut self, rec: &Element, vws: &Element, path: &str) {
            let path = format!("{path}/{}", rec.name.local);
            let want = self.vws_name(&rec.name);
            if vws.name != want {
                self.out.push(format!("{path}: recorded element {want}, vws wrote {}", vws.name));
                return;
            }
            if self.opaque(&rec.name) {
                return;
            }
            let (ra, va) = (self.attrs(rec, Side::Recorded), self.attrs(vws, Side::Vws));
            if ra != va {
                self.out.push(format!("{path}: attributes differ: recorded {ra:?}, vws {va:?}"));
            }
            if let Some(check) = self.value_check(&vws.name) {
                if let Err(e) = check.passes(rec, vws, self.norm) {
                    self.out.push(format!("{path}: {e}"));
                }
            } else {
                let (rt, vt) = (self.norm.value(rec, &rec.text(), Side::Recorded), self.norm.value(vws, &vws.text(), Side::Vws));
                if rt != vt {
                    self.out.push(format!("{path}: text differs: recorded {rt:?}, vws {vt:?}"));
                }
            }
            let rk: Vec<&Element> = rec.elements().filter(|e| !self.ignored(&e.name)).collect();
            let vk: Vec<&Element> = vws.elements().filter(|e| !self.ignored(&e.name)).collect();
            let (mut i, mut j) = (0, 0);
            while i < rk.len() || j < vk.len() {
                match (rk.get(i), vk.get(j)) {
                    (Some(r), Some(v)) if self.vws_name(&r.name) == v.name => {
                        self.element(r, v, &path);
                        i += 1;
                        j += 1;
                    }
                    (_, Some(v)) if self.optional(&v.name) => j += 1,
                    (Some(r), Some(v)) => {
                        let matches = |r: &Element, v: &Element| self.vws_name(&r.name) == v.name;
                        if rk[i + 1..].iter().any(|r| matches(r, v)) {
                            self.out.push(format!("{path}: recorded child #{i} {} missing in vws' answer", r.name));
                            i += 1;
                        } else if vk[j + 1..].iter().any(|v| matches(r, v)) {
                            self.out.push(format!("{path}: vws' answer has an unexpected child {}", v.name));
                            j += 1;
                        } else {
                            self.out.push(format!("{path}: recorded child #{i} {}, vws wrote {}", r.name, v.name));
                            i += 1;
                            j += 1;
                        }
                    }
                    (Some(r), None) => {
                        self.out.push(format!("{path}: recorded child #{i} {} missing in vws' answer", r.name));
                        i += 1;
                    }
                    (None, Some(v)) => {
                        self.out.push(format!("{path}: vws' answer has an unexpected child {}", v.name));
                        j += 1;
                    }
                    (None, None) => unreachable!(),
                }
            }
        }
    }

    /// Every difference between `recorded` and `vws` not covered by `allow`, one line each.
    pub fn compare(recorded: &Element, vws: &Element, allow: &[Allow], norm: &Normalizer) -> Vec<String> {
        let mut ctx = Ctx { allow, norm, out: Vec::new() };
        ctx.element(recorded, vws, "");
        ctx.out
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

const STUB: &str = "gt4-wsrf-clients";
const GT4: &str = "gt4-server";
const AXIS: &str = "http://xml.apache.org/axis/";
/// Nimbus' public workspace states (shared/reference/nimbus.md, "State model").
const NIMBUS_STATES: [&str; 9] =
    ["Unstaged", "Unpropagated", "Propagated", "Running", "Paused", "TransportReady", "StagedOut", "Corrupted", "Cancelled"];
/// The test policy without `max_lifetime_secs`: unlimited lifetimes, so "infinity" is allowed.
const UNLIMITED_POLICY: &str = "allowed_categories = [\"vm\"]\nallowed_vmms = [\"xen\", \"kvm\", \"qemu\"]\nmax_ram_mib = 16384\nmax_disk_mib = 204800\ndefault_lifetime_secs = 86400\n";

fn q(ns: &str, local: &str) -> QName {
    QName::new(ns, local)
}

fn recorded_dir(sub: &str) -> PathBuf {
    shared_dir().join("interop-recorded").join(sub)
}

fn read_recorded(sub: &str, file: &str) -> Vec<u8> {
    let p = recorded_dir(sub).join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Names of the `*.request.http` recordings in `sub`, sorted.
fn recorded_requests(sub: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(recorded_dir(sub))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".request.http").map(str::to_string))
        .collect();
    v.sort();
    v
}

fn xml(text: &str, what: &str) -> Element {
    parse(text, &Limits::default()).unwrap_or_else(|e| panic!("{what} is not well-formed XML ({e}): {text}"))
}

fn body_child(env: &Element) -> &Element {
    env.child(SOAPENV, "Body").and_then(|b| b.first_element()).expect("Body with a child element")
}

fn elements(e: &Element) -> Vec<&Element> {
    e.elements().collect()
}

/// Byte spans of the first element with local name `local` (any prefix):
/// (start of start tag, end of start tag, start of end tag, end of end tag).
fn find_element(xml: &str, local: &str) -> Option<(usize, usize, usize, usize)> {
    let mut from = 0;
    while let Some(i) = xml[from..].find('<').map(|i| i + from) {
        let rest = &xml[i + 1..];
        let n = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/').unwrap_or(rest.len());
        let name = &rest[..n];
        if !name.is_empty() && name.rsplit(':').next() == Some(local) {
            let open_end = i + 1 + rest.find('>')? + 1;
            if xml[..open_end].ends_with("/>") {
                return Some((i, open_end, open_end, open_end));
            }
            let close = format!("</{name}>");
            let cs = xml[open_end..].find(&close)? + open_end;
            return Some((i, open_end, cs, cs + close.len()));
        }
        from = i + 1;
    }
    None
}

/// The request's wsa:MessageID, wsa:Action and wsa:To, as replayed.
#[derive(Debug, Clone)]
struct Sent {
    message_id: String,
    action: String,
    to: String,
}

impl Sent {
    fn of(body: &str) -> Sent {
        let env = xml(body, "replayed request");
        let h = env.child(SOAPENV, "Header").expect("request has a Header");
        let get = |l: &str| h.child(WSA, l).map(|e| e.text().trim().to_string()).unwrap_or_else(|| panic!("request has wsa:{l}"));
        Sent { message_id: get("MessageID"), action: get("Action"), to: get("To") }
    }
}

/// GT convention for the answer's action: `…Request` → `…Response`, otherwise `+ "Response"`.
fn response_action(req: &str) -> String {
    match req.strip_suffix("Request") {
        Some(base) => format!("{base}Response"),
        None => format!("{req}Response"),
    }
}

/// One replayed exchange: what was sent and vws' answer.
struct Exchange {
    name: String,
    sent: Sent,
    resp: HttpResponse,
    env: Element,
}

fn replay(s: &Server, name: &str, msg: &Message) -> Exchange {
    let sent = Sent::of(&msg.body);
    let resp = s.raw(&msg.to_bytes());
    let env = xml(&resp.body, &format!("vws' answer to {name}"));
    Exchange { name: name.to_string(), sent, resp, env }
}

impl Exchange {
    fn ctx(&self) -> String {
        format!("{} (HTTP {}): {}", self.name, self.resp.status, self.resp.body)
    }

    /// HTTP status and Content-Type of vws' answer, and its WS-Addressing reply headers: the
    /// order GT 4.0 writes them (MessageID, To — not on faults —, Action, From, RelatesTo), each
    /// with `soapenv:mustUnderstand="0"`.
    fn check_reply(&self, status: u16) {
        let fault = status != 200;
        assert_eq!(self.resp.status, status, "HTTP status (want {status}): {}", self.ctx());
        let ct = self.resp.header("Content-Type").unwrap_or("");
        assert!(ct.eq_ignore_ascii_case("text/xml; charset=utf-8"), "Content-Type {ct:?}: {}", self.ctx());
        assert_eq!(self.env.name, q(SOAPENV, "Envelope"), "{}", self.ctx());
        assert_eq!(body_child(&self.env).name == q(SOAPENV, "Fault"), fault, "fault iff HTTP 500: {}", self.ctx());
        let h = self.env.child(SOAPENV, "Header").unwrap_or_else(|| panic!("no soapenv:Header: {}", self.ctx()));
        let names: Vec<String> = h.elements().map(|e| e.name.clark()).collect();
        let mut want = vec!["MessageID", "To", "Action", "From", "RelatesTo"];
        if fault {
            want.retain(|l| *l != "To");
        }
        let want: Vec<String> = want.iter().map(|l| q(WSA, l).clark()).collect();
        assert_eq!(names, want, "reply header elements: {}", self.ctx());
        for e in h.elements() {
            assert_eq!(e.attr(SOAPENV, "mustUnderstand"), Some("0"), "{} mustUnderstand: {}", e.name, self.ctx());
        }
        let text = |l: &str| h.child(WSA, l).map(|e| e.text().trim().to_string()).unwrap_or_default();
        let mid = text("MessageID");
        assert!(mid.strip_prefix("uuid:").is_some_and(domcmp::is_uuid), "wsa:MessageID {mid:?}: {}", self.ctx());
        assert_ne!(mid, self.sent.message_id, "a fresh MessageID, not the request's");
        if !fault {
            assert_eq!(text("To"), WSA_ANONYMOUS, "{}", self.ctx());
        }
        let action = if fault { WSA_FAULT_ACTION.to_string() } else { response_action(&self.sent.action) };
        assert_eq!(text("Action"), action, "{}", self.ctx());
        let from = h.child(WSA, "From").and_then(|f| f.child(WSA, "Address")).map(|a| a.text().trim().to_string());
        assert_eq!(from.as_deref(), Some(self.sent.to.as_str()), "wsa:From/wsa:Address: {}", self.ctx());
        let rel = h.child(WSA, "RelatesTo").unwrap();
        assert_eq!(rel.text().trim(), self.sent.message_id, "wsa:RelatesTo: {}", self.ctx());
        let rt = rel.attr("", "RelationshipType").unwrap_or("");
        assert_eq!(rt, "wsa:Reply", "RelationshipType: {}", self.ctx());
        assert_eq!(rel.resolve_qname(rt).ok(), Some(q(WSA, "Reply")), "RelationshipType resolves: {}", self.ctx());
    }

    /// The fault element in `detail`, checked to be a WS-BaseFault: `wsbf:Timestamp` (a
    /// dateTime) and a non-empty `wsbf:Description`. Returns (faultstring, fault element).
    fn base_fault(&self) -> (String, &Element) {
        let f = body_child(&self.env);
        let fs = f.child("", "faultstring").map(|e| e.text()).unwrap_or_default();
        let detail = f.child("", "detail").unwrap_or_else(|| panic!("fault without detail: {}", self.ctx()));
        let el = detail.first_element().unwrap_or_else(|| panic!("empty detail: {}", self.ctx()));
        let ts = el.child(WSBF, "Timestamp").map(|t| t.text()).unwrap_or_default();
        assert!(vws::wsrf::time::parse_ms(&ts).is_some(), "wsbf:Timestamp {ts:?}: {}", self.ctx());
        let d = el.child(WSBF, "Description").map(|t| t.text()).unwrap_or_default();
        assert!(!d.trim().is_empty(), "wsbf:Description missing or empty: {}", self.ctx());
        (fs, el)
    }
}

fn description(fault_el: &Element) -> String {
    fault_el.child(WSBF, "Description").map(|d| d.text()).unwrap_or_default()
}

fn assert_same(diffs: Vec<String>, ctx: &str) {
    assert!(diffs.is_empty(), "answer differs from the recording:\n  {}\nvws answered: {ctx}", diffs.join("\n  "));
}

/// A SOAP fault code in the `soapenv:Server` family (`Server`, `Server.generalException`, …).
fn is_server_code(e: &Element) -> bool {
    e.resolve_qname(e.text().trim()).is_ok_and(|c| c.ns == SOAPENV && (c.local == "Server" || c.local.starts_with("Server.")))
}

/// Run each check, collecting failures instead of stopping at the first one.
fn run_case(failures: &mut Vec<String>, name: &str, f: impl FnOnce()) {
    if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        failures.push(format!("[{name}] {msg}"));
    }
}

/// Fail with one line per failed case (the full messages are printed above by each panic).
fn finish(failures: Vec<String>, total: usize, what: &str) {
    let short: Vec<String> = failures
        .iter()
        .map(|f| {
            let line: String = f.lines().take(2).collect::<Vec<_>>().join(" ");
            line.chars().take(400).collect()
        })
        .collect();
    assert!(failures.is_empty(), "{} of {total} {what} failed:\n{}", failures.len(), short.join("\n"));
}

fn get_rp(s: &Server, key: &str, ns: &str, local: &str) -> HttpResponse {
    s.call(
        "WorkspaceService",
        &Server::ws_key_header(key),
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!("<GetResourceProperty xmlns=\"{WSRP}\" xmlns:p=\"{ns}\">p:{local}</GetResourceProperty>"),
    )
}

/// Values of the Nimbus `Comment` property of a workspace, read back with GetResourceProperty.
fn comments(s: &Server, key: &str) -> Vec<String> {
    let r = get_rp(s, key, NIMBUS, "Comment");
    assert_eq!(r.status, 200, "{}", r.body);
    let env = xml(&r.body, "GetResourceProperty answer");
    let resp = body_child(&env);
    assert_eq!(resp.name, q(WSRP, "GetResourcePropertyResponse"));
    resp.elements()
        .map(|e| {
            assert_eq!(e.name, q(NIMBUS, "Comment"), "{}", r.body);
            e.text()
        })
        .collect()
}

fn stored_keys(s: &Server) -> Vec<String> {
    s.db_dump().into_iter().map(|r| r.1).collect()
}

// ---------------------------------------------------------------------------------------------
// GT 4.0 WSRF clients (recorded against a stub), replayed against workspaces
// ---------------------------------------------------------------------------------------------

/// The stub recording `name` rewritten for `s`: Host header and wsa:To (every
/// `http://<recorded host>`) pointed at `s`, the `{…/2008/06/workspace}WorkspaceKey` header
/// element (any prefix) replaced by vws' key header, chunk size recomputed; the rest byte for byte.
fn stub_request(s: &Server, name: &str, key: Option<&str>) -> Message {
    let mut m = Message::parse(&read_recorded(STUB, &format!("{name}.request.http")));
    let host = m.header("Host").expect("Host").to_string();
    m.set_header("Host", &s.addr);
    m.body = m.body.replace(&format!("http://{host}"), &format!("http://{}", s.addr));
    if let Some(key) = key {
        let env = xml(&m.body, name);
        let rec_key = env.child(SOAPENV, "Header").and_then(|h| h.child(NIMBUS, "WorkspaceKey")).map(|k| k.text());
        assert_eq!(rec_key.as_deref(), Some("42"), "{name}: recorded Nimbus WorkspaceKey header");
        let (a, _, _, d) = find_element(&m.body, "WorkspaceKey").expect("WorkspaceKey element");
        assert!(m.body[a..d].contains(NIMBUS), "{name}: the located element is the Nimbus key: {}", &m.body[a..d]);
        let vws_key = format!("<ns:WorkspaceKey xmlns:ns=\"{VWS}\" soapenv:mustUnderstand=\"0\">{key}</ns:WorkspaceKey>");
        m.body.replace_range(a..d, &vws_key);
    }
    m
}

fn stub_response(name: &str) -> Element {
    let text = String::from_utf8(read_recorded(STUB, &format!("{name}.response.xml"))).unwrap();
    xml(&text, &format!("{name}.response.xml"))
}

/// Replace the text of the first `local` element with what `f` makes of it (None: leave as is).
fn rewrite_text(m: &mut Message, local: &str, f: impl FnOnce(&str) -> Option<String>) -> Option<String> {
    let (_, b, c, _) = find_element(&m.body, local)?;
    let new = f(&m.body[b..c])?;
    m.body.replace_range(b..c, &new);
    Some(new)
}

/// The RequestedTerminationTime a GT 4.0 client computes for `SetTerminationTime … 3600`
/// (now + 3600 s) at replay time: the recorded absolute time was "now + 1 h" at recording time
/// and would be in the past (resource destroyed at once) when replayed later.
fn in_one_hour() -> String {
    vws::wsrf::time::format_ms(vws::wsrf::time::now_ms() + 3_600_000)
}

/// Body comparison with the stub's answer (structure; the stub's values are placeholders).
fn compare_with_stub(x: &Exchange, stub: &Element, allow: &[Allow], s: &Server, key: Option<&str>) {
    let mut norm = Normalizer { recorded: vec![], vws: vec![(s.addr.clone(), "{host}".into())] };
    norm.vws.extend(key.map(|k| (k.to_string(), "{key}".to_string())));
    let rb = stub.child(SOAPENV, "Body").expect("stub Body");
    let vb = x.env.child(SOAPENV, "Body").expect("vws Body");
    assert_same(domcmp::compare(rb, vb, allow, &norm), &x.ctx());
}

fn state_allowance() -> Allow {
    Allow::Value(q(NIMBUS, "CurrentState"), Check::OneOf(NIMBUS_STATES.iter().map(|s| s.to_string()).collect()))
}

/// The stub's answer to a `fault-*` recording: a fault it was told to force (RECORD_FAULT_OPS),
/// not a judgement on the request.
fn assert_forced_fault(name: &str) {
    let r = stub_response(name);
    let f = body_child(&r);
    assert_eq!(f.name, q(SOAPENV, "Fault"), "{name}: the stub's recorded answer is a fault");
    assert!(f.child("", "faultstring").unwrap().text().contains("RECORD_FAULT_OPS"), "{name}: forced by the stub");
}

fn stub_case(s: &Server, name: &str) {
    match name {
        // fault-get-resource-property: the stub *forced* a fault for this request
        // (RECORD_FAULT_OPS) to record how the client prints one; the request itself is a plain,
        // valid GetResourceProperty, so vws must answer it normally, like get-resource-property.
        "get-resource-property" | "get-resource-property-s-k" | "fault-get-resource-property" => {
            let key = s.create_workspace();
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            let stub = if name.starts_with("fault-") {
                assert_forced_fault(name);
                stub_response("get-resource-property")
            } else {
                stub_response(name)
            };
            compare_with_stub(&x, &stub, &[state_allowance()], s, Some(&key));
        }
        "get-multiple-resource-properties" => {
            let key = s.create_workspace();
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            let allow = [
                state_allowance(),
                Allow::Value(q(NIMBUS, "CurrentTime"), Check::DateTime),
                Allow::Value(q(WSRL, "TerminationTime"), Check::DateTime),
            ];
            compare_with_stub(&x, &stub_response(name), &allow, s, Some(&key));
            // TerminationTime is the stored one.
            let tt = body_child(&x.env).child(WSRL, "TerminationTime").unwrap().text();
            let row = s.db_dump().into_iter().find(|r| r.1 == key).expect("stored");
            assert_eq!(vws::wsrf::time::parse_ms(&tt), row.2, "TerminationTime vs store: {}", x.ctx());
        }
        // The stub does no XPath: it answered every query with the EPR's key element as a
        // placeholder. What vws must return is what the expression selects: `/*` the whole
        // resource property document, `//*[local-name()='CurrentState']` the CurrentState element.
        "query-resource-properties" => {
            let key = s.create_workspace();
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            let rp_doc = q(VWS, "WorkspaceResourceProperties");
            let allow = [Allow::Renamed(q(NIMBUS, "WorkspaceKey"), rp_doc.clone()), Allow::Opaque(q(NIMBUS, "WorkspaceKey"))];
            compare_with_stub(&x, &stub_response(name), &allow, s, Some(&key));
            let doc = body_child(&x.env).first_element().unwrap();
            let names: Vec<QName> = doc.elements().map(|e| e.name.clone()).collect();
            for want in [q(NIMBUS, "CurrentState"), q(NIMBUS, "CurrentTime"), q(WSRL, "TerminationTime"), q(WSRL, "CurrentTime")]
            {
                assert!(names.contains(&want), "RP document lacks {want}: {}", x.ctx());
            }
            assert!(!names.contains(&q(NIMBUS, "Comment")), "no Comment on a fresh workspace: {}", x.ctx());
            let epr_key = doc
                .child(VWS, "EPR")
                .and_then(|e| e.child(WSA, "ReferenceProperties"))
                .and_then(|r| r.child(VWS, "WorkspaceKey"))
                .map(|k| k.text());
            assert_eq!(epr_key.as_deref(), Some(key.as_str()), "the RP document's EPR names this workspace");
        }
        "query-resource-properties-dialect" => {
            let key = s.create_workspace();
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            let allow = [Allow::Renamed(q(NIMBUS, "WorkspaceKey"), q(NIMBUS, "CurrentState")), state_allowance()];
            compare_with_stub(&x, &stub_response(name), &allow, s, Some(&key));
            assert_eq!(elements(body_child(&x.env)).len(), 1, "exactly one CurrentState selected: {}", x.ctx());
        }
        "set-termination-time" => {
            let key = s.create_workspace();
            let mut m = stub_request(s, name, Some(&key));
            let requested = rewrite_text(&mut m, "RequestedTerminationTime", |t| (!t.is_empty()).then(in_one_hour)).unwrap();
            let x = replay(s, name, &m);
            x.check_reply(200);
            let allow = [Allow::Value(q(WSRL, "NewTerminationTime"), Check::Exactly(requested.clone()))];
            compare_with_stub(&x, &stub_response(name), &allow, s, Some(&key));
            let row = s.db_dump().into_iter().find(|r| r.1 == key).expect("stored");
            assert_eq!(row.2, vws::wsrf::time::parse_ms(&requested), "stored termination time");
        }
        "set-termination-time-infinity" => {
            let key = s.create_workspace();
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            compare_with_stub(&x, &stub_response(name), &[], s, Some(&key));
            let row = s.db_dump().into_iter().find(|r| r.1 == key).expect("stored");
            assert_eq!(row.2, None, "no termination time stored after infinity");
        }
        // fault-destroy: forced by the stub (RECORD_FAULT_OPS), see fault-get-resource-property.
        "destroy" | "fault-destroy" => {
            let key = s.create_workspace();
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            if name.starts_with("fault-") {
                assert_forced_fault(name);
            }
            compare_with_stub(&x, &stub_response("destroy"), &[], s, Some(&key));
            assert!(!stored_keys(s).contains(&key), "destroyed workspace still in the store");
            let r = get_rp(s, &key, NIMBUS, "CurrentState");
            assert_eq!((r.status, r.fault_kind().as_deref()), (500, Some("ResourceUnknownFault")), "{}", r.body);
        }
        "set-resource-properties-insert" => {
            let key = s.create_workspace();
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            compare_with_stub(&x, &stub_response(name), &[], s, Some(&key));
            assert_eq!(comments(s, &key), ["hello"]);
        }
        "set-resource-properties-update" => {
            let key = s.create_workspace();
            let r = s.call(
                "WorkspaceService",
                &Server::ws_key_header(&key),
                &format!("{WSRP_ACTION}/SetResourceProperties"),
                &format!("<SetResourceProperties xmlns=\"{WSRP}\"><Insert><c:Comment xmlns:c=\"{NIMBUS}\">before</c:Comment></Insert></SetResourceProperties>"),
            );
            assert_eq!(r.status, 200, "setting up a Comment: {}", r.body);
            assert_eq!(comments(s, &key), ["before"]);
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            compare_with_stub(&x, &stub_response(name), &[], s, Some(&key));
            assert_eq!(comments(s, &key), ["hello"], "Update replaces the value");
        }
        "set-resource-properties-delete" => {
            let key = s.create_workspace();
            let x = replay(s, "set-resource-properties-insert", &stub_request(s, "set-resource-properties-insert", Some(&key)));
            x.check_reply(200);
            assert_eq!(comments(s, &key), ["hello"]);
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            compare_with_stub(&x, &stub_response(name), &[], s, Some(&key));
            assert!(comments(s, &key).is_empty(), "Comment deleted");
        }
        // The stub answered with a made-up message; vws publishes every declared property as a
        // topic, so the answer is the property's current value in GT 4.0's GetCurrentMessage form.
        "get-current-message" => {
            let key = s.create_workspace();
            let x = replay(s, name, &stub_request(s, name, Some(&key)));
            x.check_reply(200);
            assert!(x.resp.body.contains("GetCurrentMessageResponse"), "{}", x.ctx());
            assert!(x.resp.body.contains("ResourcePropertyValueChangeNotificationType"), "{}", x.ctx());
            assert!(x.resp.body.contains("Unstaged"), "the current CurrentState: {}", x.ctx());
        }
        // Nimbus' own factory protocol is not vws': a clean SOAP fault naming it, no resource.
        "nimbus-factory-create-from-args" | "nimbus-factory-create-from-request" => {
            let before = stored_keys(s).len();
            let x = replay(s, name, &stub_request(s, name, None));
            x.check_reply(500);
            let (_, el) = x.base_fault();
            let nimbus_create = format!("{{{NIMBUS}}}create");
            let names_it = Check::Contains(vec![nimbus_create, "not supported".into()]);
            let allow = [
                Allow::Value(q("", "faultcode"), Check::Custom("a soapenv:Server fault code", is_server_code)),
                Allow::Value(q("", "faultstring"), names_it.clone()),
                Allow::Renamed(q(WSBF, "BaseFault"), el.name.clone()),
                Allow::Value(q(WSBF, "Description"), names_it),
                Allow::OptionalInVws(q(WSBF, "ErrorCode")),
                Allow::OptionalInVws(q(WSBF, "Originator")),
            ];
            compare_with_stub(&x, &stub_response(name), &allow, s, None);
            assert_eq!(stored_keys(s).len(), before, "no resource created");
        }
        other => panic!("recording {other} has no replay case: every recorded request must be replayed"),
    }
}

#[test]
fn gt4_wsrf_client_recordings_replay_against_workspaces() {
    let names = recorded_requests(STUB);
    assert_eq!(names.len(), 16, "recordings in {STUB}: {names:?}");
    let s = Server::start_with(Conf { policy: UNLIMITED_POLICY.into(), ..Default::default() });
    let mut failures = Vec::new();
    for name in &names {
        run_case(&mut failures, name, || stub_case(&s, name));
    }
    finish(failures, names.len(), "GT 4.0 client replays");
}

// ---------------------------------------------------------------------------------------------
// A real GT 4.0 container (counter sample), replayed against CounterService / CounterServiceRW
// ---------------------------------------------------------------------------------------------

/// The exchanges in the order they were recorded (the status list of clients-transcript.txt).
fn gt4_order() -> Vec<(String, u16)> {
    let t = String::from_utf8(read_recorded(GT4, "clients-transcript.txt")).unwrap();
    t.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(": HTTP/1.1 ")?;
            Some((name.to_string(), rest.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The counter key in a createCounterResponse (GT4's or vws').
fn created_key(env: &Element) -> String {
    body_child(env)
        .child(WSA, "EndpointReference")
        .and_then(|e| e.child(WSA, "ReferenceProperties"))
        .and_then(|r| r.child(COUNTER, "CounterKey"))
        .map(|k| k.text().trim().to_string())
        .expect("createCounterResponse/EndpointReference/ReferenceProperties/CounterKey")
}

fn created_host(env: &Element) -> String {
    let a = body_child(env).child(WSA, "EndpointReference").and_then(|e| e.child(WSA, "Address")).unwrap().text();
    a.trim().strip_prefix("http://").and_then(|r| r.split('/').next()).unwrap().to_string()
}

struct Recorded {
    msg: Message,
    env: Element,
}

fn gt4_response(name: &str) -> Recorded {
    let msg = Message::parse(&read_recorded(GT4, &format!("{name}.response.http")));
    let env = xml(&msg.body, &format!("{name}.response.http"));
    Recorded { msg, env }
}

/// The differences between GT 4.0's answer and vws' that are expected for `name`.
fn gt4_allowances(name: &str, recorded_status: u16, x: &Exchange) -> Vec<Allow> {
    let mut a = Vec::new();
    if recorded_status == 500 {
        // (a) GT4 leaves faultstring empty; vws fills it (GT clients print it as "Error: …").
        a.push(Allow::Value(q("", "faultstring"), Check::NonEmpty));
        // GT4-only detail content: Java stack traces (nested FaultCause/ErrorCode) and Axis'
        // exceptionName / hostname / stackTrace.
        a.push(Allow::Ignore(q(WSBF, "FaultCause")));
        for l in ["exceptionName", "hostname", "stackTrace"] {
            a.push(Allow::Ignore(q(AXIS, l)));
        }
        // Optional BaseFault fields GT4 left out and vws fills.
        a.push(Allow::OptionalInVws(q(WSBF, "Description")));
        a.push(Allow::OptionalInVws(q(WSBF, "Originator")));
        a.push(Allow::OptionalInVws(q(WSBF, "ErrorCode")));
    }
    match name {
        // Free-text descriptions ("Failed to remove resource"): vws names the key instead.
        "getrp-destroyed" | "destroy-destroyed" | "settt-destroyed" => {
            a.push(Allow::Value(q(WSBF, "Description"), Check::NonEmpty));
        }
        // GT4: "{…ResourceLifetime…}CurrentTime"; vws adds why ("… is read-only").
        "setrp-rw-readonly-currenttime" => a.push(Allow::Value(q(WSBF, "Description"), Check::ContainsRecorded)),
        // (c) GT4's port type has no SetResourceProperties, so Axis failed deserializing it
        // (Server.userException, stack trace). vws answers a typed fault naming the operation.
        "setrp-counter-unsupported" => {
            a.push(Allow::Value(q("", "faultcode"), Check::Custom("a soapenv:Server fault code", is_server_code)));
            a.push(Allow::Value(q("", "faultstring"), Check::Contains(vec!["SetResourceProperties".into()])));
            if let Some(el) = body_child(&x.env).child("", "detail").and_then(|d| d.first_element()) {
                a.push(Allow::OptionalInVws(el.name.clone()));
            }
        }
        // (d) GT4: Axis userException "Resource key is missing"; vws: a wsrp ResourceUnknownFault.
        "getrp-no-key" => {
            a.push(Allow::Value(q("", "faultcode"), Check::Custom("a soapenv:Server fault code", is_server_code)));
            a.push(Allow::OptionalInVws(q(WSRP, "ResourceUnknownFault")));
        }
        // (e) GT4's RP document also lists the notification topics; vws publishes none.
        "query-xpath-root" => {
            for l in ["FixedTopicSet", "Topic", "TopicExpressionDialects"] {
                a.push(Allow::Ignore(q(WSNT, l)));
            }
        }
        _ => {}
    }
    a
}

/// Checks beyond the comparison with GT4, per exchange.
fn gt4_extra_checks(s: &Server, name: &str, x: &Exchange, requested_tt: Option<&str>, key: &str) {
    match name {
        "setrp-counter-unsupported" => {
            let (fs, _) = x.base_fault();
            assert!(fs.contains("SetResourceProperties"), "a useful faultstring: {}", x.ctx());
        }
        "getrp-no-key" => {
            let (fs, el) = x.base_fault();
            assert_eq!(el.name, q(WSRP, "ResourceUnknownFault"), "{}", x.ctx());
            let d = description(el);
            assert!(d.contains("missing") && d.contains("CounterKey"), "description mentions the missing key: {}", x.ctx());
            assert!(!fs.trim().is_empty());
        }
        "getrp-unknown-qname" | "setrp-rw-readonly-currenttime" | "getrp-destroyed" | "destroy-destroyed" | "settt-destroyed" => {
            x.base_fault();
        }
        "settt-3600s" => {
            let ntt = body_child(&x.env).child(WSRL, "NewTerminationTime").map(|e| e.text());
            assert_eq!(ntt.as_deref(), requested_tt, "NewTerminationTime echoes the request: {}", x.ctx());
        }
        "settt-nil" => {
            let ntt = body_child(&x.env).child(WSRL, "NewTerminationTime").expect("NewTerminationTime");
            assert!(ntt.is_nil() && ntt.attr(XSI, "nil").is_some(), "{}", x.ctx());
        }
        "destroy" => assert!(!stored_keys(s).contains(&key.to_string()), "destroyed counter still stored"),
        _ => {}
    }
}

#[test]
fn gt4_counter_recordings_replay_against_counter_services() {
    let order = gt4_order();
    let mut listed: Vec<String> = order.iter().map(|(n, _)| n.clone()).collect();
    listed.sort();
    assert_eq!(listed, recorded_requests(GT4), "every recorded request is replayed, in the transcript's order");

    let s = Server::start();
    let created = gt4_response("create");
    let created_rw = gt4_response("create-rw");
    let (rec_key, rec_rw_key) = (created_key(&created.env), created_key(&created_rw.env));
    let container_host = created_host(&created.env);
    let mut keys: Vec<(String, String)> = Vec::new(); // recorded key -> vws key
    let mut failures = Vec::new();

    for (name, recorded_status) in &order {
        let rec = gt4_response(name);
        assert_eq!(rec.msg.status(), *recorded_status, "{name}: transcript and recording agree");
        let mut m = Message::parse(&read_recorded(GT4, &format!("{name}.request.http")));
        let relay_host = m.header("Host").expect("Host").to_string();
        m.set_header("Host", &s.addr);
        m.body = m.body.replace(&format!("http://{relay_host}"), &format!("http://{}", s.addr));
        let mut key = String::new();
        if let Some((_, b, c, _)) = find_element(&m.body, "CounterKey") {
            let recorded = m.body[b..c].to_string();
            let (_, vws_key) = keys
                .iter()
                .find(|(r, _)| *r == recorded)
                .unwrap_or_else(|| panic!("{name}: key {recorded} of no replayed create"));
            key = vws_key.clone();
            m.body.replace_range(b..c, &key);
        }
        // Recorded absolute termination times (now + 1 h at recording time) are recomputed;
        // nil (`settt-nil`) stays as recorded.
        let requested_tt = rewrite_text(&mut m, "RequestedTerminationTime", |t| (!t.is_empty()).then(in_one_hour));
        let x = replay(&s, name, &m);
        if name == "create" || name == "create-rw" {
            assert_eq!(x.resp.status, 200, "{}", x.ctx());
            let k = created_key(&x.env);
            keys.push((if name == "create" { rec_key.clone() } else { rec_rw_key.clone() }, k));
        }
        run_case(&mut failures, name, || {
            // HTTP: same status and Content-Type as GT4.
            assert_eq!(x.resp.status, rec.msg.status(), "HTTP status: {}", x.ctx());
            assert_eq!(rec.msg.header("Content-Type"), Some("text/xml; charset=utf-8"));
            // (b) GT4 closes every connection (and mirrors chunked framing); vws keeps it alive.
            assert_eq!(rec.msg.header("Connection"), Some("close"), "GT4 closes");
            assert!(
                !x.resp.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
                "vws keeps the connection alive: {:?}",
                x.resp.headers
            );
            x.check_reply(*recorded_status);
            let mut norm = Normalizer {
                recorded: vec![(container_host.clone(), "{host}".into()), (relay_host.clone(), "{host}".into())],
                vws: vec![(s.addr.clone(), "{host}".into())],
            };
            for (r, v) in &keys {
                norm.recorded.push((r.clone(), "{key}".into()));
                norm.vws.push((v.clone(), "{key}".into()));
            }
            let allow = gt4_allowances(name, *recorded_status, &x);
            assert_same(domcmp::compare(&rec.env, &x.env, &allow, &norm), &x.ctx());
            gt4_extra_checks(&s, name, &x, requested_tt.as_deref(), &key);
        });
    }
    finish(failures, order.len(), "GT 4.0 counter replays");
}

/// (b) GT 4.0 answers `Connection: close`; vws keeps connections alive, so a GT4 client request
/// followed by another on the same connection both get answers.
#[test]
fn connection_stays_alive_across_replayed_requests() {
    use std::io::{BufReader, Write};
    let s = Server::start();
    let key = s.create_counter("CounterService");
    let mut m = Message::parse(&read_recorded(GT4, "getrp-value.request.http"));
    let host = m.header("Host").unwrap().to_string();
    m.set_header("Host", &s.addr);
    m.body = m.body.replace(&format!("http://{host}"), &format!("http://{}", s.addr));
    let (_, b, c, _) = find_element(&m.body, "CounterKey").unwrap();
    m.body.replace_range(b..c, &key);
    let stream = std::net::TcpStream::connect(&s.addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    for i in 0..2 {
        w.write_all(&m.to_bytes()).unwrap();
        let resp = read_response(&mut r).unwrap_or_else(|e| panic!("answer #{i} on one connection: {e}"));
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert!(resp.body.contains("GetResourcePropertyResponse"), "{}", resp.body);
        assert!(!resp.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")));
    }
}

// ---------------------------------------------------------------------------------------------
// The tools themselves
// ---------------------------------------------------------------------------------------------

/// Parsing and rebuilding a recording is lossless, so a replay is byte for byte the recording
/// except where the suite substitutes; the de-chunked bodies match the stub's `*.body.xml`.
#[test]
fn recordings_round_trip_byte_for_byte() {
    for sub in [STUB, GT4] {
        for name in recorded_requests(sub) {
            let raw = read_recorded(sub, &format!("{name}.request.http"));
            let m = Message::parse(&raw);
            assert_eq!(m.to_bytes(), raw, "{sub}/{name}.request.http");
            if sub == STUB {
                assert_eq!(m.framing, http_msg::Framing::Chunked, "{name}: GT4 clients send chunked");
                assert_eq!(m.header("Content-Length"), None);
                let body = read_recorded(sub, &format!("{name}.body.xml"));
                assert_eq!(m.body.as_bytes(), body.as_slice(), "{name}.body.xml");
            }
        }
    }
    // The -s -k recording's key header has another prefix; it is still found and replaced.
    let m = Message::parse(&read_recorded(STUB, "get-resource-property-s-k.request.http"));
    let (a, _, _, d) = find_element(&m.body, "WorkspaceKey").unwrap();
    assert!(m.body[a..d].starts_with("<ns1:WorkspaceKey "), "{}", &m.body[a..d]);
}

#[test]
fn comparer_reports_differences_and_honours_allowances() {
    let rec = xml(
        "<r xmlns=\"urn:r\" xmlns:w=\"urn:w\" xmlns:z=\"urn:z\"><a k=\"w:X\">2026-11-26T12:00:00.000Z</a>\
         <b>uuid:c8b0cb90-e993-11f1-956c-e402a376e8d1</b><c>http://host:1111/s 1281131989</c><z:gone>trace</z:gone><d>free</d></r>",
        "recorded",
    );
    let same = xml(
        "<p:r xmlns:p=\"urn:r\" xmlns:v=\"urn:w\"><p:a k=\"v:X\">2030-01-01T00:00:00Z</p:a>\
         <p:b>uuid:00237c0b-5623-425c-9ec8-715945daa147</p:b><p:c>http://host:2222/s vws-key-abc</p:c><p:e/><p:d>other</p:d></p:r>",
        "vws",
    );
    let norm = Normalizer {
        recorded: vec![("host:1111".into(), "{host}".into()), ("1281131989".into(), "{key}".into())],
        vws: vec![("host:2222".into(), "{host}".into()), ("vws-key-abc".into(), "{key}".into())],
    };
    let allow = [
        Allow::Ignore(q("urn:z", "gone")),
        Allow::OptionalInVws(q("urn:r", "e")),
        Allow::Value(q("urn:r", "d"), Check::NonEmpty),
    ];
    assert_eq!(domcmp::compare(&rec, &same, &allow, &norm), Vec::<String>::new());
    // Without the allowances every one of those differences is reported.
    let diffs = domcmp::compare(&rec, &same, &[], &norm);
    assert_eq!(diffs.len(), 2, "{diffs:#?}");
    assert!(diffs[0].contains("recorded child #3 {urn:z}gone, vws wrote {urn:r}e"), "{diffs:#?}");
    assert!(diffs[1].contains("/r/d: text differs"), "{diffs:#?}");
    // A changed value, a renamed or reordered element, a changed attribute: all reported.
    let changed = xml("<r xmlns=\"urn:r\"><a k=\"Y\">x</a><c>http://host:2222/s vws-key-abc</c><b>uuid:1</b><d/></r>", "vws");
    let diffs = domcmp::compare(&rec, &changed, &allow, &norm);
    assert!(diffs.iter().any(|d| d.contains("attributes differ")), "{diffs:#?}");
    assert!(diffs.iter().any(|d| d.contains("/r/a: text differs")), "{diffs:#?}");
    assert!(diffs.iter().any(|d| d.contains("missing")), "{diffs:#?}");
    assert!(diffs.iter().any(|d| d.contains("/r/d: text")), "{diffs:#?}");
    // Renamed + Opaque: a placeholder element standing for another one.
    let rename = [Allow::Renamed(q("urn:z", "gone"), q("urn:r", "e")), Allow::Opaque(q("urn:z", "gone"))];
    let r2 = xml("<r xmlns=\"urn:r\" xmlns:z=\"urn:z\"><z:gone>42</z:gone></r>", "recorded");
    let v2 = xml("<r xmlns=\"urn:r\"><e a=\"1\"><f/></e></r>", "vws");
    assert!(domcmp::compare(&r2, &v2, &rename, &norm).is_empty());
    assert!(!domcmp::compare(&r2, &v2, &[], &norm).is_empty());
}
