//! SOAP 1.1 envelopes: parsing requests (with their WS-Addressing 2004/03 headers) and writing
//! responses and faults the way a GT 4.0 container does.

use super::ns;
use super::xml::{self, escape, escape_into, Element, Limits, QName, XmlError};

/// WS-Addressing request headers (2004/03).
#[derive(Clone, Debug, Default)]
pub struct Addressing {
    pub to: Option<String>,
    pub action: Option<String>,
    pub message_id: Option<String>,
    pub reply_to: Option<String>,
    pub from: Option<String>,
}

/// A parsed request envelope.
#[derive(Debug)]
pub struct Envelope {
    pub root: Element,
    pub addressing: Addressing,
}

impl Envelope {
    pub fn header(&self) -> Option<&Element> {
        self.root.child(ns::SOAPENV, "Header")
    }
    /// Header children that are not WS-Addressing headers (reference properties, security, ...).
    pub fn other_headers(&self) -> impl Iterator<Item = &Element> {
        self.header().into_iter().flat_map(|h| h.elements()).filter(|e| e.name.ns != ns::WSA)
    }
    pub fn header_named(&self, q: &QName) -> Option<&Element> {
        self.header()?.elements().find(|e| &e.name == q)
    }
    /// The payload: the Body's first child element.
    pub fn payload(&self) -> &Element {
        self.root.child(ns::SOAPENV, "Body").and_then(|b| b.first_element()).expect("checked by parse")
    }
}

/// SOAP 1.1 fault codes (GT4 uses `Server.generalException` for WSRF faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCode {
    VersionMismatch,
    MustUnderstand,
    Client,
    Server,
    ServerGeneral,
}

impl FaultCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultCode::VersionMismatch => "soapenv:VersionMismatch",
            FaultCode::MustUnderstand => "soapenv:MustUnderstand",
            FaultCode::Client => "soapenv:Client",
            FaultCode::Server => "soapenv:Server",
            FaultCode::ServerGeneral => "soapenv:Server.generalException",
        }
    }
}

/// A SOAP fault ready to be written. `detail` is serialized XML placed inside `<detail>`.
#[derive(Clone, Debug)]
pub struct SoapFault {
    pub code: FaultCode,
    pub string: String,
    pub detail: Option<String>,
    /// HTTP status to answer with (500 per SOAP 1.1; 413 for oversized bodies etc.).
    pub status: u16,
}

impl SoapFault {
    pub fn client(msg: impl Into<String>) -> Self {
        SoapFault { code: FaultCode::Client, string: msg.into(), detail: None, status: 500 }
    }
    pub fn server(msg: impl Into<String>) -> Self {
        SoapFault { code: FaultCode::Server, string: msg.into(), detail: None, status: 500 }
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

impl From<XmlError> for SoapFault {
    fn from(e: XmlError) -> Self {
        SoapFault::client(format!("Request refused: {e}"))
    }
}

/// Parse and check a request envelope.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Envelope, SoapFault> {
    let root = xml::parse_bytes(body, limits)?;
    if root.is(ns::SOAP12ENV, "Envelope") {
        return Err(SoapFault {
            code: FaultCode::VersionMismatch,
            string: "SOAP 1.2 envelopes are not supported; this service speaks SOAP 1.1".into(),
            detail: None,
            status: 500,
        });
    }
    if !root.is(ns::SOAPENV, "Envelope") {
        let code = if root.name.local == "Envelope" { FaultCode::VersionMismatch } else { FaultCode::Client };
        return Err(SoapFault {
            code,
            string: format!("root element {} is not a SOAP 1.1 Envelope ({{{}}}Envelope)", root.name, ns::SOAPENV),
            detail: None,
            status: 500,
        });
    }
    let body_el = root.child(ns::SOAPENV, "Body").ok_or_else(|| SoapFault::client("SOAP Envelope has no Body"))?;
    match body_el.elements().count() {
        0 => return Err(SoapFault::client("SOAP Body is empty: no operation element")),
        1 => {}
        n => return Err(SoapFault::client(format!("SOAP Body holds {n} elements: a request carries exactly one operation"))),
    }
    let mut addressing = Addressing::default();
    if let Some(h) = root.child(ns::SOAPENV, "Header") {
        for e in h.elements().filter(|e| e.name.ns == ns::WSA) {
            match e.name.local.as_str() {
                "To" => addressing.to = Some(e.text_ref().trim().to_string()),
                "Action" => addressing.action = Some(e.text_ref().trim().to_string()),
                "MessageID" => addressing.message_id = Some(e.text_ref().trim().to_string()),
                "ReplyTo" => addressing.reply_to = address_of(e),
                "From" => addressing.from = address_of(e),
                _ => {}
            }
        }
    }
    Ok(Envelope { root, addressing })
}

fn address_of(epr: &Element) -> Option<String> {
    epr.child(ns::WSA, "Address").map(|a| a.text_ref().trim().to_string())
}

/// Does `action` name the operation `op` (the Body element's local name)? GT 4.0 actions follow
/// WS-Addressing's default pattern and end in the operation (`…/GetResourceProperty`) or its
/// input message (`…/CounterPortType/addRequest`). An opaque action with no path (`urn:frob`)
/// names no operation, so there is nothing to disagree with: the Body alone decides (and an
/// operation no port type has gets its UnknownOperationFault).
pub fn action_names(action: &str, op: &str) -> bool {
    if !action.contains('/') {
        return true;
    }
    // The separators are ASCII: the byte after the last one starts a char.
    let last = action.bytes().rposition(|b| matches!(b, b'/' | b'#' | b':')).map_or(action, |i| &action[i + 1..]);
    last == op || last.strip_suffix("Request") == Some(op)
}

/// The Body's operation, wsa:Action and the HTTP SOAPAction (when not empty) must agree, so a
/// request cannot say one operation and do another.
pub fn check_operation(env: &Envelope, soap_action: Option<&str>) -> Result<(), SoapFault> {
    let op = &env.payload().name;
    // No operation's element contains itself. Axis 1.4's WSDL2Java in its default (wrapped) mode
    // mistakes GT 4.0's operation elements for wrappers and sends them twice
    // (<GetResourceProperty><GetResourceProperty>…, <add><add>5</add></add>); GT 4.0 generated
    // its stubs with -W. Say so rather than answering a confusing fault about the content.
    if env.payload().elements().any(|c| &c.name == op) {
        return Err(SoapFault::client(format!(
            "doubly wrapped request: the Body's {op} contains another {op}. This is what Axis 1.4 stubs generated by \
             WSDL2Java in its default (wrapped) mode send; generate them with WSDL2Java -W (--noWrapped), as GT 4.0 did"
        )));
    }
    let soap_action = soap_action.filter(|s| !s.is_empty());
    if let (Some(sa), Some(wa)) = (soap_action, env.addressing.action.as_deref()) {
        if sa != wa {
            return Err(SoapFault::client(format!("SOAPAction '{sa}' and wsa:Action '{wa}' disagree")));
        }
    }
    for (what, a) in [("wsa:Action", env.addressing.action.as_deref()), ("SOAPAction", soap_action)] {
        if let Some(a) = a {
            if !action_names(a, &op.local) {
                return Err(SoapFault::client(format!("{what} '{a}' does not name the Body's operation {op}")));
            }
        }
    }
    Ok(())
}

/// True when a header element demands to be understood (`soapenv:mustUnderstand="1"`).
pub fn must_understand(e: &Element) -> bool {
    matches!(e.attr(ns::SOAPENV, "mustUnderstand").map(str::trim), Some("1") | Some("true"))
}

pub fn new_message_id() -> String {
    let mut out = String::with_capacity(41);
    push_message_id(&mut out);
    out
}

/// Appends a new `uuid:` message id (a version 1 UUID, random node) to `out`.
fn push_message_id(out: &mut String) {
    use std::sync::OnceLock;
    static NODE: OnceLock<[u8; 6]> = OnceLock::new();
    let node = NODE.get_or_init(|| {
        let mut n: [u8; 6] = rand::random();
        n[0] |= 0x01; // multicast bit: a random, not a MAC-derived, node id
        n
    });
    let mut buf = uuid::Uuid::encode_buffer();
    out.push_str("uuid:");
    out.push_str(uuid::Uuid::now_v1(node).hyphenated().encode_lower(&mut buf));
}

const ENVELOPE_OPEN: &str = concat!(
    "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" ",
    "xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" ",
    "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ",
    "xmlns:wsa=\"http://schemas.xmlsoap.org/ws/2004/03/addressing\">"
);

/// Write the response headers GT 4.0 writes: MessageID, To (anonymous, not on faults), Action,
/// From (the address the request was sent to), RelatesTo (the request's MessageID).
fn write_headers(out: &mut String, req: &Addressing, service_url: &str, action: &str, fault: bool) {
    out.push_str("<soapenv:Header><wsa:MessageID soapenv:mustUnderstand=\"0\">");
    push_message_id(out);
    out.push_str("</wsa:MessageID>");
    if !fault {
        out.push_str("<wsa:To soapenv:mustUnderstand=\"0\">");
        out.push_str(ns::WSA_ANONYMOUS);
        out.push_str("</wsa:To>");
    }
    out.push_str("<wsa:Action soapenv:mustUnderstand=\"0\">");
    escape_into(out, action, false);
    out.push_str("</wsa:Action><wsa:From soapenv:mustUnderstand=\"0\"><wsa:Address>");
    escape_into(out, req.to.as_deref().unwrap_or(service_url), false);
    out.push_str("</wsa:Address></wsa:From>");
    if let Some(id) = &req.message_id {
        out.push_str("<wsa:RelatesTo RelationshipType=\"wsa:Reply\" soapenv:mustUnderstand=\"0\">");
        escape_into(out, id, false);
        out.push_str("</wsa:RelatesTo>");
    }
    out.push_str("</soapenv:Header>");
}

/// A response envelope around `payload` (serialized XML of the Body's child).
pub fn response(req: &Addressing, service_url: &str, action: &str, payload: &str) -> String {
    let mut out = String::with_capacity(ENVELOPE_OPEN.len() + 600 + payload.len());
    out.push_str(ENVELOPE_OPEN);
    write_headers(&mut out, req, service_url, action, false);
    out.push_str("<soapenv:Body>");
    out.push_str(payload);
    out.push_str("</soapenv:Body></soapenv:Envelope>");
    out
}

/// A fault envelope. Addressing headers are written when the request's could be read.
pub fn fault(req: Option<&Addressing>, service_url: &str, f: &SoapFault) -> String {
    let mut out = String::with_capacity(1024 + f.detail.as_ref().map_or(0, |d| d.len()));
    out.push_str(ENVELOPE_OPEN);
    if let Some(req) = req {
        write_headers(&mut out, req, service_url, ns::WSA_FAULT_ACTION, true);
    }
    out.push_str("<soapenv:Body><soapenv:Fault><faultcode>");
    out.push_str(f.code.as_str());
    out.push_str("</faultcode><faultstring>");
    out.push_str(&escape(&f.string));
    out.push_str("</faultstring>");
    if let Some(d) = &f.detail {
        out.push_str("<detail>");
        out.push_str(d);
        out.push_str("</detail>");
    }
    out.push_str("</soapenv:Fault></soapenv:Body></soapenv:Envelope>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gt4_addressing_headers() {
        let body = format!(
            "<soapenv:Envelope xmlns:soapenv=\"{}\" xmlns:wsa=\"{}\"><soapenv:Header>\
             <wsa:MessageID soapenv:mustUnderstand=\"0\">uuid:1</wsa:MessageID>\
             <wsa:To soapenv:mustUnderstand=\"0\">http://h/x</wsa:To>\
             <wsa:Action soapenv:mustUnderstand=\"0\">urn:a</wsa:Action>\
             <k:Key xmlns:k=\"urn:k\" soapenv:mustUnderstand=\"0\">7</k:Key></soapenv:Header>\
             <soapenv:Body><op xmlns=\"urn:o\"/></soapenv:Body></soapenv:Envelope>",
            ns::SOAPENV,
            ns::WSA
        );
        let env = parse(body.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(env.addressing.message_id.as_deref(), Some("uuid:1"));
        assert_eq!(env.addressing.to.as_deref(), Some("http://h/x"));
        assert_eq!(env.addressing.action.as_deref(), Some("urn:a"));
        assert_eq!(env.payload().name, QName::new("urn:o", "op"));
        let key = env.header_named(&QName::new("urn:k", "Key")).unwrap();
        assert_eq!(key.text(), "7");
        assert!(!must_understand(key));
        assert_eq!(env.other_headers().count(), 1);
    }

    #[test]
    fn refuses_wrong_envelopes() {
        let l = Limits::default();
        let f = parse(b"<Envelope xmlns=\"urn:wrong\"><Body><x/></Body></Envelope>", &l).unwrap_err();
        assert_eq!(f.code, FaultCode::VersionMismatch);
        let f = parse(format!("<e:Envelope xmlns:e=\"{}\"/>", ns::SOAPENV).as_bytes(), &l).unwrap_err();
        assert!(f.string.contains("no Body"), "{}", f.string);
        let f = parse(format!("<e:Envelope xmlns:e=\"{}\"><e:Body/></e:Envelope>", ns::SOAPENV).as_bytes(), &l).unwrap_err();
        assert!(f.string.contains("empty"), "{}", f.string);
    }

    #[test]
    fn writes_relates_to_and_fault_action() {
        let a = Addressing { message_id: Some("uuid:x".into()), to: Some("http://h/s".into()), ..Default::default() };
        let r = response(&a, "http://h/s", "urn:act", "<p/>");
        assert!(r.contains("<wsa:RelatesTo RelationshipType=\"wsa:Reply\" soapenv:mustUnderstand=\"0\">uuid:x</wsa:RelatesTo>"));
        assert!(r.contains("<wsa:Address>http://h/s</wsa:Address>"));
        let f = fault(Some(&a), "http://h/s", &SoapFault::client("bad <thing>"));
        assert!(f.contains(ns::WSA_FAULT_ACTION));
        assert!(f.contains("<faultstring>bad &lt;thing&gt;</faultstring>"));
        assert!(!f.contains("role/anonymous"));
    }
}
