//! The WSRF 2004/06 messages, one type each with one encoder and one decoder (see
//! [`crate::soap::message`]): WS-ResourceProperties' GetResourceProperty,
//! GetMultipleResourceProperties, QueryResourceProperties and SetResourceProperties, and
//! WS-ResourceLifetime's Destroy and SetTerminationTime, with their responses. The services
//! decode requests and encode responses with them (`properties.rs`, `lifetime.rs`); the client
//! (`client::Client::invoke`) encodes the same requests and decodes the same responses.
//!
//! A refused request decodes to the WS-BaseFault the specification names (e.g.
//! `InvalidResourcePropertyQNameFault`). Property values travel as serialized XML ("content":
//! the response's children as written), so the service copies stored values without parsing.

use super::faults::{BaseFault, FaultType};
use crate::soap::message::{Message, Request};
use crate::soap::ns;
use crate::soap::time;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::{Element, Limits, Node, QName};

fn qname_of(el: &Element, text: &str) -> Result<QName, BaseFault> {
    el.resolve_qname(text)
        .map_err(|e| BaseFault::new(FaultType::InvalidResourcePropertyQName, format!("invalid resource property QName: {e}")))
}

fn wsrp_action(op: &str) -> String {
    [ns::WSRP_ACTION, "/", op].concat()
}

fn wsrl_action(op: &str) -> String {
    format!("{}/{op}", ns::WSRL_ACTION)
}

fn expect(e: &Element, ns_uri: &str, local: &str) -> Result<(), BaseFault> {
    if e.is(ns_uri, local) {
        Ok(())
    } else {
        Err(BaseFault::new(FaultType::InvalidRequest, format!("expected {{{ns_uri}}}{local}, got {}", e.name)))
    }
}

/// Serialized children of `e` (elements as standalone fragments, text escaped).
pub(crate) fn content_of(e: &Element) -> String {
    let mut w = XmlWriter::new();
    for c in &e.children {
        match c {
            Node::Element(c) => {
                w.raw(&c.to_fragment());
            }
            Node::Text(t) => {
                w.text(t);
            }
        }
    }
    w.into_string()
}

/// Parse response content (as held by the responses here) into an element whose children are
/// the values, for reading them as a DOM.
pub fn parse_content(content: &str) -> Result<Element, String> {
    let limits = Limits { max_depth: 256, max_elements: 1_000_000, max_attributes: 256 };
    crate::soap::xml::parse(&format!("<content>{content}</content>"), &limits).map_err(|e| e.to_string())
}

/// `p:local` with `xmlns:p` for a QName written as element text.
fn qname_attrs<'a>(decl: &'a str, q: &'a QName) -> [(&'a str, &'a str); 1] {
    [(decl, q.ns.as_str())]
}

// ---- GetResourceProperty ------------------------------------------------------------------

/// `wsrp:GetResourceProperty`: the body's text is the property's QName.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResourceProperty {
    pub name: QName,
}

impl Message for GetResourceProperty {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("GetResourceProperty", &[("xmlns", ns::WSRP), qname_attrs("xmlns:p", &self.name)[0]])
            .text("p:")
            .text(&self.name.local)
            .end("GetResourceProperty");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRP, "GetResourceProperty")?;
        Ok(GetResourceProperty { name: qname_of(e, &e.text_ref())? })
    }
}

impl Request for GetResourceProperty {
    type Response = GetResourcePropertyResponse;
    fn action(&self) -> String {
        wsrp_action("GetResourceProperty")
    }
    fn response_action(&self) -> String {
        wsrp_action("GetResourcePropertyResponse")
    }
}

/// The values of the property, serialized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetResourcePropertyResponse {
    pub content: String,
}

impl Message for GetResourcePropertyResponse {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("GetResourcePropertyResponse", &[("xmlns", ns::WSRP)]).raw(&self.content).end("GetResourcePropertyResponse");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRP, "GetResourcePropertyResponse")?;
        Ok(GetResourcePropertyResponse { content: content_of(e) })
    }
}

// ---- GetMultipleResourceProperties --------------------------------------------------------

/// `wsrp:GetMultipleResourceProperties`: one `ResourceProperty` QName per property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetMultipleResourceProperties {
    pub names: Vec<QName>,
}

impl Message for GetMultipleResourceProperties {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("GetMultipleResourceProperties", &[("xmlns", ns::WSRP)]);
        for (i, q) in self.names.iter().enumerate() {
            let p = format!("p{i}");
            let decl = format!("xmlns:{p}");
            w.start("ResourceProperty", &qname_attrs(&decl, q)).text(&p).text(":").text(&q.local).end("ResourceProperty");
        }
        w.end("GetMultipleResourceProperties");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRP, "GetMultipleResourceProperties")?;
        let mut names = Vec::new();
        for rp in e.elements() {
            if !rp.is(ns::WSRP, "ResourceProperty") {
                return Err(BaseFault::new(
                    FaultType::InvalidResourcePropertyQName,
                    format!("unexpected element {} in GetMultipleResourceProperties", rp.name),
                ));
            }
            names.push(qname_of(rp, &rp.text())?);
        }
        if names.is_empty() {
            return Err(BaseFault::new(FaultType::InvalidResourcePropertyQName, "no ResourceProperty requested"));
        }
        Ok(GetMultipleResourceProperties { names })
    }
}

impl Request for GetMultipleResourceProperties {
    type Response = GetMultipleResourcePropertiesResponse;
    fn action(&self) -> String {
        wsrp_action("GetMultipleResourceProperties")
    }
    fn response_action(&self) -> String {
        wsrp_action("GetMultipleResourcePropertiesResponse")
    }
}

/// The values of every requested property, in request order, serialized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetMultipleResourcePropertiesResponse {
    pub content: String,
}

impl Message for GetMultipleResourcePropertiesResponse {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("GetMultipleResourcePropertiesResponse", &[("xmlns", ns::WSRP)])
            .raw(&self.content)
            .end("GetMultipleResourcePropertiesResponse");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRP, "GetMultipleResourcePropertiesResponse")?;
        Ok(GetMultipleResourcePropertiesResponse { content: content_of(e) })
    }
}

// ---- QueryResourceProperties --------------------------------------------------------------

/// `wsrp:QueryResourceProperties` with the XPath 1.0 dialect (the only one vws evaluates).
/// `namespaces` are the prefix bindings the expression may use: declared on the
/// QueryExpression element when encoding, every binding in scope there when decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryResourceProperties {
    pub expression: String,
    pub namespaces: Vec<(String, String)>,
}

impl Message for QueryResourceProperties {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        let decls: Vec<(String, &str)> = self
            .namespaces
            .iter()
            .filter(|(p, _)| !p.is_empty() && p != "xml")
            .map(|(p, u)| (format!("xmlns:{p}"), u.as_str()))
            .collect();
        let mut attrs: Vec<(&str, &str)> = vec![("Dialect", ns::XPATH_DIALECT)];
        attrs.extend(decls.iter().map(|(k, v)| (k.as_str(), *v)));
        w.start("QueryResourceProperties", &[("xmlns", ns::WSRP)])
            .leaf("QueryExpression", &attrs, &self.expression)
            .end("QueryResourceProperties");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRP, "QueryResourceProperties")?;
        let qe = e
            .child(ns::WSRP, "QueryExpression")
            .ok_or_else(|| BaseFault::new(FaultType::InvalidQueryExpression, "QueryResourceProperties has no QueryExpression"))?;
        let dialect = qe.attr("", "Dialect").unwrap_or("").trim();
        if dialect != ns::XPATH_DIALECT {
            return Err(BaseFault::new(
                FaultType::UnknownQueryExpressionDialect,
                format!("query dialect '{dialect}' is not supported; use {}", ns::XPATH_DIALECT),
            ));
        }
        Ok(QueryResourceProperties { expression: qe.text(), namespaces: qe.scope.bindings() })
    }
}

impl Request for QueryResourceProperties {
    type Response = QueryResourcePropertiesResponse;
    fn action(&self) -> String {
        wsrp_action("QueryResourceProperties")
    }
    fn response_action(&self) -> String {
        wsrp_action("QueryResourcePropertiesResponse")
    }
}

/// What the query selected (nodes, or the text of a number, string or boolean), serialized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResourcePropertiesResponse {
    pub content: String,
}

impl Message for QueryResourcePropertiesResponse {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("QueryResourcePropertiesResponse", &[("xmlns", ns::WSRP)])
            .raw(&self.content)
            .end("QueryResourcePropertiesResponse");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRP, "QueryResourcePropertiesResponse")?;
        Ok(QueryResourcePropertiesResponse { content: content_of(e) })
    }
}

// ---- SetResourceProperties ----------------------------------------------------------------

/// One component of a SetResourceProperties request; values are serialized property elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetComponent {
    Insert(QName, Vec<String>),
    Update(QName, Vec<String>),
    Delete(QName),
}

impl SetComponent {
    pub fn name(&self) -> &QName {
        match self {
            SetComponent::Insert(q, _) | SetComponent::Update(q, _) | SetComponent::Delete(q) => q,
        }
    }
}

/// `wsrp:SetResourceProperties`: Insert, Update and Delete components, applied all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetResourceProperties {
    pub components: Vec<SetComponent>,
}

fn same_qname(kind: &str, children: &[&Element]) -> Result<QName, BaseFault> {
    let first = children.first().ok_or_else(|| {
        BaseFault::new(FaultType::InvalidSetResourcePropertiesRequestContent, format!("{kind} holds no property element"))
    })?;
    if children.iter().any(|c| c.name != first.name) {
        return Err(BaseFault::new(
            FaultType::InvalidSetResourcePropertiesRequestContent,
            format!("{kind} mixes different properties; one {kind} may hold values of one property only"),
        ));
    }
    Ok(first.name.clone())
}

impl Message for SetResourceProperties {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("SetResourceProperties", &[("xmlns", ns::WSRP)]);
        for c in &self.components {
            match c {
                SetComponent::Insert(_, v) | SetComponent::Update(_, v) => {
                    let tag = if matches!(c, SetComponent::Insert(..)) { "Insert" } else { "Update" };
                    w.start(tag, &[]);
                    for x in v {
                        w.raw(x);
                    }
                    w.end(tag);
                }
                SetComponent::Delete(q) => {
                    w.empty("Delete", &[("xmlns:p", &q.ns), ("ResourceProperty", &format!("p:{}", q.local))]);
                }
            }
        }
        w.end("SetResourceProperties");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRP, "SetResourceProperties")?;
        let mut components = Vec::new();
        for c in e.elements() {
            let kids: Vec<&Element> = c.elements().collect();
            let values = || kids.iter().map(|k| k.to_fragment()).collect::<Vec<_>>();
            match (c.name.ns.as_str(), c.name.local.as_str()) {
                (ns::WSRP, "Insert") => components.push(SetComponent::Insert(same_qname("Insert", &kids)?, values())),
                (ns::WSRP, "Update") => components.push(SetComponent::Update(same_qname("Update", &kids)?, values())),
                (ns::WSRP, "Delete") => {
                    let text = c.attr("", "ResourceProperty").ok_or_else(|| {
                        BaseFault::new(
                            FaultType::InvalidSetResourcePropertiesRequestContent,
                            "Delete without ResourceProperty attribute",
                        )
                    })?;
                    components.push(SetComponent::Delete(qname_of(c, text)?));
                }
                _ => {
                    return Err(BaseFault::new(
                        FaultType::InvalidSetResourcePropertiesRequestContent,
                        format!("unexpected element {} in SetResourceProperties (expected Insert, Update or Delete)", c.name),
                    ))
                }
            }
        }
        if components.is_empty() {
            return Err(BaseFault::new(FaultType::InvalidSetResourcePropertiesRequestContent, "SetResourceProperties is empty"));
        }
        Ok(SetResourceProperties { components })
    }
}

impl Request for SetResourceProperties {
    type Response = SetResourcePropertiesResponse;
    fn action(&self) -> String {
        wsrp_action("SetResourceProperties")
    }
    fn response_action(&self) -> String {
        wsrp_action("SetResourcePropertiesResponse")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetResourcePropertiesResponse;

impl Message for SetResourcePropertiesResponse {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.empty("SetResourcePropertiesResponse", &[("xmlns", ns::WSRP)]);
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRP, "SetResourcePropertiesResponse")?;
        Ok(SetResourcePropertiesResponse)
    }
}

// ---- Destroy ------------------------------------------------------------------------------

/// `wsrl:Destroy`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destroy;

impl Message for Destroy {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.empty("Destroy", &[("xmlns", ns::WSRL)]);
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRL, "Destroy")?;
        Ok(Destroy)
    }
}

impl Request for Destroy {
    type Response = DestroyResponse;
    fn action(&self) -> String {
        wsrl_action("Destroy")
    }
    fn response_action(&self) -> String {
        wsrl_action("DestroyResponse")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestroyResponse;

impl Message for DestroyResponse {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.empty("DestroyResponse", &[("xmlns", ns::WSRL)]);
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRL, "DestroyResponse")?;
        Ok(DestroyResponse)
    }
}

// ---- SetTerminationTime -------------------------------------------------------------------

/// `wsrl:SetTerminationTime`; `requested` None (xsi:nil) means never.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetTerminationTime {
    pub requested: Option<i64>,
}

/// `<tag>time</tag>`, or `<tag xsi:nil="true"/>` for None.
fn write_time(w: &mut XmlWriter, tag: &str, t: Option<i64>) {
    match t {
        Some(t) => {
            w.leaf(tag, &[], &time::format_ms(t));
        }
        None => {
            w.empty(tag, &[("xmlns:xsi", ns::XSI), ("xsi:nil", "true")]);
        }
    }
}

fn read_time(e: &Element, kind: FaultType) -> Result<Option<i64>, BaseFault> {
    match crate::soap::element_text_or_nil(e) {
        None => Ok(None),
        Some(text) => time::parse_ms(&text)
            .map(Some)
            .ok_or_else(|| BaseFault::new(kind, format!("{} '{}' is not an xsd:dateTime", e.name.local, text.trim()))),
    }
}

impl Message for SetTerminationTime {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("SetTerminationTime", &[("xmlns", ns::WSRL)]);
        write_time(w, "RequestedTerminationTime", self.requested);
        w.end("SetTerminationTime");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRL, "SetTerminationTime")?;
        let rtt = e.child(ns::WSRL, "RequestedTerminationTime").ok_or_else(|| {
            BaseFault::new(FaultType::UnableToSetTerminationTime, "SetTerminationTime has no RequestedTerminationTime")
        })?;
        Ok(SetTerminationTime { requested: read_time(rtt, FaultType::UnableToSetTerminationTime)? })
    }
}

impl Request for SetTerminationTime {
    type Response = SetTerminationTimeResponse;
    fn action(&self) -> String {
        wsrl_action("SetTerminationTime")
    }
    fn response_action(&self) -> String {
        wsrl_action("SetTerminationTimeResponse")
    }
}

/// The new termination time (None = never) and the service's current time, in ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetTerminationTimeResponse {
    pub new_termination_time: Option<i64>,
    pub current_time: i64,
}

impl Message for SetTerminationTimeResponse {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("SetTerminationTimeResponse", &[("xmlns", ns::WSRL)]);
        write_time(w, "NewTerminationTime", self.new_termination_time);
        w.leaf("CurrentTime", &[], &time::format_ms(self.current_time)).end("SetTerminationTimeResponse");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        expect(e, ns::WSRL, "SetTerminationTimeResponse")?;
        let missing = |l: &str| BaseFault::new(FaultType::InvalidRequest, format!("SetTerminationTimeResponse has no {l}"));
        let new = e.child(ns::WSRL, "NewTerminationTime").ok_or_else(|| missing("NewTerminationTime"))?;
        let cur = e.child(ns::WSRL, "CurrentTime").ok_or_else(|| missing("CurrentTime"))?;
        Ok(SetTerminationTimeResponse {
            new_termination_time: read_time(new, FaultType::InvalidRequest)?,
            current_time: read_time(cur, FaultType::InvalidRequest)?.ok_or_else(|| missing("CurrentTime value"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::xml::parse;

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: &M) -> M
    where
        M::Error: std::fmt::Debug,
    {
        let xml = m.to_xml();
        let e = parse(&xml, &Limits::default()).unwrap_or_else(|err| panic!("{err}: {xml}"));
        let back = M::decode(&e).unwrap();
        assert_eq!(&back, m, "{xml}");
        back
    }

    #[test]
    fn requests_round_trip() {
        let q = QName::new("urn:a&\"b'<c>", "x");
        round_trip(&GetResourceProperty { name: q.clone() });
        round_trip(&GetMultipleResourceProperties { names: vec![q.clone(), QName::new(ns::VWS, "hardware")] });
        round_trip(&SetResourceProperties {
            components: vec![
                SetComponent::Insert(q.clone(), vec!["<p:x xmlns:p=\"urn:a&amp;&quot;b'&lt;c&gt;\">ü &lt;&amp;\"</p:x>".into()]),
                SetComponent::Update(QName::new("urn:u", "v"), vec!["<q:v xmlns:q=\"urn:u\">1</q:v>".into(); 2]),
                SetComponent::Delete(q),
            ],
        });
        round_trip(&Destroy);
        round_trip(&SetTerminationTime { requested: Some(1_700_000_000_123) });
        round_trip(&SetTerminationTime { requested: None });
        let qr = QueryResourceProperties { expression: "//*[text() < 3 and @a = \"&'\"] | /ü".into(), namespaces: vec![] };
        let back = QueryResourceProperties::decode(&parse(&qr.to_xml(), &Limits::default()).unwrap()).unwrap();
        assert_eq!(back.expression, qr.expression);
        let with_ns = QueryResourceProperties { expression: "/w:x".into(), namespaces: vec![("w".into(), ns::VWS.into())] };
        let back = QueryResourceProperties::decode(&parse(&with_ns.to_xml(), &Limits::default()).unwrap()).unwrap();
        assert!(back.namespaces.contains(&("w".to_string(), ns::VWS.to_string())), "{:?}", back.namespaces);
    }

    #[test]
    fn responses_round_trip() {
        let content = "<p:a xmlns:p=\"urn:p\">1 &lt;&amp; ü</p:a><p:a xmlns:p=\"urn:p\" xmlns:xsi=\"".to_string()
            + ns::XSI
            + "\" xsi:nil=\"true\"/>";
        let back = round_trip(&GetResourcePropertyResponse { content: content.clone() });
        let e = parse_content(&back.content).unwrap();
        assert_eq!(e.elements().count(), 2);
        assert_eq!(e.elements().next().unwrap().text(), "1 <& ü");
        round_trip(&GetMultipleResourcePropertiesResponse { content });
        round_trip(&QueryResourcePropertiesResponse { content: "3".into() });
        round_trip(&SetResourcePropertiesResponse);
        round_trip(&DestroyResponse);
        round_trip(&SetTerminationTimeResponse { new_termination_time: None, current_time: 1000 });
        round_trip(&SetTerminationTimeResponse { new_termination_time: Some(5_000), current_time: 1000 });
    }

    #[test]
    fn decode_errors_are_the_wsrf_faults() {
        let l = Limits::default();
        let e = parse(&format!("<GetResourceProperty xmlns=\"{}\">zz:x</GetResourceProperty>", ns::WSRP), &l).unwrap();
        assert_eq!(GetResourceProperty::decode(&e).unwrap_err().kind, FaultType::InvalidResourcePropertyQName);
        let e = parse(&format!("<GetMultipleResourceProperties xmlns=\"{}\"/>", ns::WSRP), &l).unwrap();
        assert_eq!(GetMultipleResourceProperties::decode(&e).unwrap_err().kind, FaultType::InvalidResourcePropertyQName);
        let e = parse(
            &format!("<QueryResourceProperties xmlns=\"{}\"><QueryExpression Dialect=\"urn:x\">/</QueryExpression></QueryResourceProperties>", ns::WSRP),
            &l,
        )
        .unwrap();
        assert_eq!(QueryResourceProperties::decode(&e).unwrap_err().kind, FaultType::UnknownQueryExpressionDialect);
        let e = parse(&format!("<SetResourceProperties xmlns=\"{}\"/>", ns::WSRP), &l).unwrap();
        assert_eq!(SetResourceProperties::decode(&e).unwrap_err().kind, FaultType::InvalidSetResourcePropertiesRequestContent);
        let e = parse(
            &format!(
                "<SetTerminationTime xmlns=\"{}\"><RequestedTerminationTime>soon</RequestedTerminationTime></SetTerminationTime>",
                ns::WSRL
            ),
            &l,
        )
        .unwrap();
        assert_eq!(SetTerminationTime::decode(&e).unwrap_err().kind, FaultType::UnableToSetTerminationTime);
    }

    fn dechunk(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&b[..eol]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok()).unwrap_or(0);
            if size == 0 || b.len() < eol + 2 + size {
                break;
            }
            out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
            b = &b[(eol + 4 + size).min(b.len())..];
        }
        out
    }

    /// The bodies real GT 4.0 clients sent (recorded in shared/interop-recorded) decode.
    #[test]
    fn decodes_recorded_gt4_requests() {
        let dir = ["../shared/interop-recorded", "/work/shared/interop-recorded"]
            .iter()
            .map(std::path::PathBuf::from)
            .chain(std::env::var_os("VWS_SHARED").map(|s| std::path::PathBuf::from(s).join("interop-recorded")))
            .find(|p| p.is_dir());
        let Some(dir) = dir else {
            eprintln!("interop-recorded not found; skipped");
            return;
        };
        let mut decoded = 0;
        for sub in ["gt4-wsrf-clients", "gt4-server", "gt4-server-notification"] {
            let Ok(rd) = std::fs::read_dir(dir.join(sub)) else { continue };
            for f in rd.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if !name.contains("request") {
                    continue;
                }
                let raw = std::fs::read(f.path()).unwrap();
                let Some(start) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&raw[..start]).to_ascii_lowercase();
                let mut body = raw[start + 4..].to_vec();
                if head.contains("transfer-encoding: chunked") {
                    body = dechunk(&body);
                }
                let Ok(env) = crate::soap::envelope::parse(&body, &Limits::default()) else { continue };
                let p = env.payload();
                let ok = match (p.name.ns.as_str(), p.name.local.as_str()) {
                    (ns::WSRP, "GetResourceProperty") => GetResourceProperty::decode(p).map(drop),
                    (ns::WSRP, "GetMultipleResourceProperties") => GetMultipleResourceProperties::decode(p).map(drop),
                    (ns::WSRP, "QueryResourceProperties") => QueryResourceProperties::decode(p).map(drop),
                    (ns::WSRP, "SetResourceProperties") => SetResourceProperties::decode(p).map(drop),
                    (ns::WSRL, "Destroy") => Destroy::decode(p).map(drop),
                    (ns::WSRL, "SetTerminationTime") => SetTerminationTime::decode(p).map(drop),
                    _ => continue,
                };
                if let Err(e) = ok {
                    // Recordings of deliberately bad requests are answered with faults.
                    eprintln!("{sub}/{name}: {e}");
                    continue;
                }
                decoded += 1;
            }
        }
        assert!(decoded >= 5, "only {decoded} recorded WSRF requests decoded");
    }
}
