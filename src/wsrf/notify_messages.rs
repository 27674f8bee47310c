//! The WS-BaseNotification messages, one type each with one encoder and one decoder (see
//! [`crate::soap::message`]), used by the service (`notification.rs`,
//! `services/subscription.rs`) and the client (`client/watch.rs`): `wsnt:Notify` as vwsd sends
//! it to consumers (GT 4.0's shape: one `NotificationMessage` with Topic, ProducerReference and
//! either a `wsrp:ResourcePropertyValueChangeNotification` or a `wsrl:TerminationTime`) and the
//! envelope around it ([`notify_envelope`]); Subscribe, PauseSubscription, ResumeSubscription,
//! GetCurrentMessage and their responses; and the subscription's property values written the
//! same way ([`topic_property`], [`wsnt_property`], [`ConsumerReference::to_property`]). A
//! refused request decodes to the WS-BaseFault WS-BaseNotification names. Property values
//! travel as serialized XML, copied without parsing.

use super::faults::{BaseFault, FaultType};
use super::messages::content_of;
use crate::soap::epr::{Epr, WSA_DECL};
use crate::soap::message::{DecodeError, Message, Request};
use crate::soap::ns;
use crate::soap::time;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::{Element, QName};

/// What a notification carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyContent {
    /// A resource property's values before (when known) and after a change, as XML.
    ValueChange { old: Option<String>, new: String },
    /// The producer was destroyed at this time (xsd:dateTime text).
    Termination { time: String },
}

/// `wsnt:Notify` with one `NotificationMessage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    pub topic: QName,
    /// ProducerReference: the producer's service address and its key (element name and text).
    pub producer_address: String,
    pub producer_key_name: QName,
    pub producer_key: String,
    pub content: NotifyContent,
}

fn err(m: impl Into<String>) -> DecodeError {
    DecodeError(m.into())
}

fn child<'a>(e: &'a Element, ns_uri: &str, local: &str) -> Result<&'a Element, DecodeError> {
    e.child(ns_uri, local).ok_or_else(|| err(format!("{} has no {{{ns_uri}}}{local}", e.name)))
}

impl Message for Notify {
    type Error = DecodeError;

    fn encode(&self, w: &mut XmlWriter) {
        w.start("Notify", &[("xmlns", ns::WSNT)]).start("NotificationMessage", &[]);
        w.leaf(
            "Topic",
            &[("Dialect", ns::SIMPLE_TOPIC_DIALECT), ("xmlns:ns1", &self.topic.ns)],
            &format!("ns1:{}", self.topic.local),
        );
        let key_tag = format!("ns2:{}", self.producer_key_name.local);
        w.start("ProducerReference", &[("xmlns:wsa", ns::WSA)])
            .leaf("wsa:Address", &[], &self.producer_address)
            .start("wsa:ReferenceProperties", &[])
            .leaf(&key_tag, &[("xmlns:ns2", &self.producer_key_name.ns)], &self.producer_key)
            .end("wsa:ReferenceProperties")
            .empty("wsa:ReferenceParameters", &[])
            .end("ProducerReference");
        match &self.content {
            NotifyContent::ValueChange { old, new } => {
                w.start(
                    "Message",
                    &[
                        ("xsi:type", "ns3:ResourcePropertyValueChangeNotificationElementType"),
                        ("xmlns:ns3", ns::GLOBUS_NOTIFICATION),
                        ("xmlns:xsi", ns::XSI),
                    ],
                )
                .start("ns4:ResourcePropertyValueChangeNotification", &[("xmlns:ns4", ns::WSRP)]);
                if let Some(old) = old {
                    w.start("ns4:OldValue", &[]).raw(old).end("ns4:OldValue");
                }
                w.start("ns4:NewValue", &[])
                    .raw(new)
                    .end("ns4:NewValue")
                    .end("ns4:ResourcePropertyValueChangeNotification")
                    .end("Message");
            }
            NotifyContent::Termination { time } => {
                w.start("Message", &[]).leaf("ns3:TerminationTime", &[("xmlns:ns3", ns::WSRL)], time).end("Message");
            }
        }
        w.end("NotificationMessage").end("Notify");
    }

    fn decode(e: &Element) -> Result<Self, DecodeError> {
        if !e.is(ns::WSNT, "Notify") {
            return Err(err(format!("expected wsnt:Notify, got {}", e.name)));
        }
        let m = child(e, ns::WSNT, "NotificationMessage")?;
        let t = child(m, ns::WSNT, "Topic")?;
        let topic = t.resolve_qname(t.text().trim()).map_err(|e| err(format!("Topic: {e}")))?;
        let p = child(m, ns::WSNT, "ProducerReference")?;
        let producer_address = child(p, ns::WSA, "Address")?.text().trim().to_string();
        let key = child(p, ns::WSA, "ReferenceProperties")?
            .first_element()
            .ok_or_else(|| err("ProducerReference has no reference property"))?;
        let msg = child(m, ns::WSNT, "Message")?;
        let content = if let Some(c) = msg.child(ns::WSRP, "ResourcePropertyValueChangeNotification") {
            NotifyContent::ValueChange {
                old: c.child(ns::WSRP, "OldValue").map(content_of),
                new: content_of(child(c, ns::WSRP, "NewValue")?),
            }
        } else {
            NotifyContent::Termination { time: child(msg, ns::WSRL, "TerminationTime")?.text().trim().to_string() }
        };
        Ok(Notify { topic, producer_address, producer_key_name: key.name.clone(), producer_key: key.text(), content })
    }
}

/// The whole Notify envelope, shaped as GT 4.0's: wsa:MessageID, wsa:To (the consumer's
/// address), wsa:Action, an anonymous wsa:From and the consumer's reference properties
/// (`headers`, serialized, copied as they are), then `body`.
pub fn notify_envelope(message_id: &str, to: &str, headers: &[String], body: &Notify) -> String {
    let mut w = XmlWriter::with_capacity(1600);
    let mu = [("soapenv:mustUnderstand", "0")];
    w.start(
        "soapenv:Envelope",
        &[("xmlns:soapenv", ns::SOAPENV), ("xmlns:xsd", ns::XSD), ("xmlns:xsi", ns::XSI), ("xmlns:wsa", ns::WSA)],
    )
    .start("soapenv:Header", &[])
    .leaf("wsa:MessageID", &mu, message_id)
    .leaf("wsa:To", &mu, to)
    .leaf("wsa:Action", &mu, &format!("{}/Notify", ns::WSNT_ACTION))
    .start("wsa:From", &mu)
    .leaf("wsa:Address", &[], ns::WSA_ANONYMOUS)
    .end("wsa:From");
    for h in headers {
        w.raw(h);
    }
    w.end("soapenv:Header").start("soapenv:Body", &[]);
    body.encode(&mut w);
    w.end("soapenv:Body").end("soapenv:Envelope");
    w.into_string()
}

// ---- Subscribe ----------------------------------------------------------------------------

fn wsnt_action(op: &str) -> String {
    format!("{}/{op}", ns::WSNT_ACTION)
}

/// A Simple-dialect topic expression (`Dialect` attribute, text `prefix:local`): its QName.
/// Other dialects, a missing namespace or a malformed name are the faults WS-BaseNotification
/// names.
pub fn simple_topic(e: &Element) -> Result<QName, BaseFault> {
    let dialect = e.attr("", "Dialect").or_else(|| e.attr(ns::WSNT, "Dialect")).unwrap_or("").trim();
    if dialect != ns::SIMPLE_TOPIC_DIALECT {
        let what = if dialect.is_empty() { "no Dialect".to_string() } else { format!("dialect '{dialect}'") };
        let known = dialect == ns::CONCRETE_TOPIC_DIALECT || dialect == ns::FULL_TOPIC_DIALECT;
        return Err(BaseFault::new(
            FaultType::TopicPathDialectUnknown,
            format!(
                "topic expression with {what}{}: only {} is supported",
                if known { " (known, not evaluated)" } else { "" },
                ns::SIMPLE_TOPIC_DIALECT
            ),
        ));
    }
    let text = e.text();
    let q = e.resolve_qname(&text).map_err(|m| {
        BaseFault::new(FaultType::InvalidTopicExpression, format!("Simple topic expression '{}': {m}", text.trim()))
    })?;
    if q.ns.is_empty() {
        return Err(BaseFault::new(
            FaultType::InvalidTopicExpression,
            format!("Simple topic expression '{}' has no namespace (write prefix:name)", text.trim()),
        ));
    }
    Ok(q)
}

/// A Simple-dialect topic element `<tag Dialect=… xmlns:ns1=…>ns1:local</tag>` (`dialect`: the
/// name of the Dialect attribute as written).
fn write_topic(w: &mut XmlWriter, tag: &str, dialect: &str, topic: &QName) {
    w.start(tag, &[(dialect, ns::SIMPLE_TOPIC_DIALECT), ("xmlns:ns1", &topic.ns)]).text("ns1:").text(&topic.local).end(tag);
}

/// A topic element as a self-contained fragment, as GT 4.0 writes the subscription's
/// `wsnt:TopicExpression` property (`ns2:Dialect`, `ns1` the topic's namespace, `ns2` wsnt).
pub fn topic_property(local: &str, topic: &QName) -> String {
    let tag = format!("ns2:{local}");
    let mut w = XmlWriter::with_capacity(256);
    w.start(&tag, &[("ns2:Dialect", ns::SIMPLE_TOPIC_DIALECT), ("xmlns:ns1", &topic.ns), ("xmlns:ns2", ns::WSNT)])
        .text("ns1:")
        .text(&topic.local)
        .end(&tag);
    w.into_string()
}

/// `<wsnt:{local} xmlns:wsnt=…>text</wsnt:{local}>`: a wsnt property value.
pub fn wsnt_property(local: &str, text: &str) -> String {
    let tag = format!("wsnt:{local}");
    let mut w = XmlWriter::with_capacity(128);
    w.leaf(&tag, &[("xmlns:wsnt", ns::WSNT)], text);
    w.into_string()
}

/// The consumer's endpoint reference: its address and its reference properties and
/// parameters, each a serialized element (copied as SOAP headers into every Notify).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerReference {
    pub address: String,
    pub properties: Vec<String>,
    pub parameters: Vec<String>,
}

impl ConsumerReference {
    pub fn new(address: impl Into<String>) -> Self {
        ConsumerReference { address: address.into(), properties: Vec::new(), parameters: Vec::new() }
    }

    /// The element `tag` (`wsa` must be declared around it or in `decls`); `all`: write the
    /// holders of reference properties and parameters even when empty (as GT 4.0 writes EPRs),
    /// else only those with something in them.
    pub fn encode(&self, w: &mut XmlWriter, tag: &str, decls: &[(&str, &str)], all: bool) {
        w.start(tag, decls).leaf("wsa:Address", &[], &self.address);
        for (holder, items) in [("wsa:ReferenceProperties", &self.properties), ("wsa:ReferenceParameters", &self.parameters)] {
            if items.is_empty() {
                if all {
                    w.empty(holder, &[]);
                }
                continue;
            }
            w.start(holder, &[]);
            for p in items {
                w.raw(p);
            }
            w.end(holder);
        }
        w.end(tag);
    }

    /// The `wsnt:ConsumerReference` property of a subscription: a self-contained element,
    /// shaped as GT 4.0 answers it.
    pub fn to_property(&self) -> String {
        let mut w = XmlWriter::with_capacity(256);
        self.encode(&mut w, "wsnt:ConsumerReference", &[("xmlns:wsnt", ns::WSNT), ("xmlns:wsa", ns::WSA)], true);
        w.into_string()
    }

    fn decode(e: &Element) -> Result<Self, BaseFault> {
        let bad = |m: String| BaseFault::new(FaultType::SubscribeCreationFailed, format!("wsnt:ConsumerReference: {m}"));
        let address = e.child(ns::WSA, "Address").ok_or_else(|| bad("no wsa:Address".into()))?.text().trim().to_string();
        let uri: hyper::Uri = address.parse().map_err(|err| bad(format!("address '{address}' is not a URL: {err}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad(format!("address '{address}' is not an http:// or https:// URL")));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad(format!("address '{address}' has no host")));
        }
        let items = |holder: &str| -> Vec<String> {
            e.child(ns::WSA, holder).map(|rp| rp.elements().map(|p| p.to_fragment()).collect()).unwrap_or_default()
        };
        Ok(ConsumerReference { address, properties: items("ReferenceProperties"), parameters: items("ReferenceParameters") })
    }
}

/// `wsnt:Subscribe`: a consumer, a Simple topic expression, UseNotify (None: not written, which
/// means true) and an optional InitialTerminationTime (ms since the epoch; None also for a nil
/// one). Precondition, Selector and SubscriptionPolicy are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub consumer: ConsumerReference,
    pub topic: QName,
    pub use_notify: Option<bool>,
    pub initial_termination_ms: Option<i64>,
}

impl Message for Subscribe {
    type Error = BaseFault;

    fn encode(&self, w: &mut XmlWriter) {
        w.start("wsnt:Subscribe", &[("xmlns:wsnt", ns::WSNT), ("xmlns:wsa", ns::WSA)]);
        self.consumer.encode(w, "wsnt:ConsumerReference", &[], false);
        write_topic(w, "wsnt:TopicExpression", "Dialect", &self.topic);
        if let Some(u) = self.use_notify {
            w.leaf("wsnt:UseNotify", &[], if u { "true" } else { "false" });
        }
        if let Some(t) = self.initial_termination_ms {
            w.leaf("wsnt:InitialTerminationTime", &[], &time::format_ms(t));
        }
        w.end("wsnt:Subscribe");
    }

    fn decode(e: &Element) -> Result<Self, BaseFault> {
        if !e.is(ns::WSNT, "Subscribe") {
            return Err(BaseFault::new(FaultType::InvalidRequest, format!("expected wsnt:Subscribe, got {}", e.name)));
        }
        let topic_el = e
            .child(ns::WSNT, "TopicExpression")
            .ok_or_else(|| BaseFault::new(FaultType::InvalidTopicExpression, "Subscribe has no wsnt:TopicExpression"))?;
        let topic = simple_topic(topic_el)?;
        for unsupported in ["Precondition", "Selector", "SubscriptionPolicy"] {
            if e.child(ns::WSNT, unsupported).is_some() {
                return Err(BaseFault::new(
                    FaultType::SubscribeCreationFailed,
                    format!("wsnt:{unsupported} is not supported (only a Simple topic expression selects messages)"),
                ));
            }
        }
        let consumer = e
            .child(ns::WSNT, "ConsumerReference")
            .ok_or_else(|| BaseFault::new(FaultType::SubscribeCreationFailed, "Subscribe has no wsnt:ConsumerReference"))?;
        let consumer = ConsumerReference::decode(consumer)?;
        let use_notify = match e.child(ns::WSNT, "UseNotify").map(|e| e.text()) {
            None => None,
            Some(t) => match t.trim() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                other => {
                    return Err(BaseFault::new(
                        FaultType::SubscribeCreationFailed,
                        format!("wsnt:UseNotify '{other}' is not an xsd:boolean"),
                    ))
                }
            },
        };
        let initial_termination_ms = match e.child(ns::WSNT, "InitialTerminationTime") {
            Some(t) if !t.is_nil() => Some(time::parse_ms(&t.text()).ok_or_else(|| {
                BaseFault::new(
                    FaultType::UnacceptableInitialTerminationTime,
                    format!("InitialTerminationTime '{}' is not an xsd:dateTime", t.text().trim()),
                )
            })?),
            _ => None,
        };
        Ok(Subscribe { consumer, topic, use_notify, initial_termination_ms })
    }
}

impl Request for Subscribe {
    type Response = SubscribeResponse;
    fn action(&self) -> String {
        wsnt_action("Subscribe")
    }
    fn response_action(&self) -> String {
        wsnt_action("SubscribeResponse")
    }
}

/// `wsnt:SubscribeResponse`: the new subscription's EPR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeResponse {
    pub subscription: Epr,
}

impl Message for SubscribeResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("SubscribeResponse", &[("xmlns", ns::WSNT)]);
        self.subscription.encode(w, "SubscriptionReference", &[WSA_DECL]);
        w.end("SubscribeResponse");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        if !e.is(ns::WSNT, "SubscribeResponse") {
            return Err(err(format!("expected wsnt:SubscribeResponse, got {}", e.name)));
        }
        let subscription = Epr::from_element(child(e, ns::WSNT, "SubscriptionReference")?).map_err(err)?;
        Ok(SubscribeResponse { subscription })
    }
}

// ---- PauseSubscription, ResumeSubscription ------------------------------------------------

/// Messages that are one empty wsnt element.
macro_rules! empty_wsnt_message {
    ($(#[$doc:meta])* $name:ident, $local:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl Message for $name {
            type Error = BaseFault;
            fn encode(&self, w: &mut XmlWriter) {
                w.empty($local, &[("xmlns", ns::WSNT)]);
            }
            fn decode(e: &Element) -> Result<Self, BaseFault> {
                if e.is(ns::WSNT, $local) {
                    Ok($name)
                } else {
                    Err(BaseFault::new(FaultType::InvalidRequest, format!("expected wsnt:{}, got {}", $local, e.name)))
                }
            }
        }
    };
}

empty_wsnt_message!(
    /// `wsnt:PauseSubscription` (sent to the subscription's EPR).
    PauseSubscription,
    "PauseSubscription"
);
empty_wsnt_message!(
    /// `wsnt:PauseSubscriptionResponse`.
    PauseSubscriptionResponse,
    "PauseSubscriptionResponse"
);
empty_wsnt_message!(
    /// `wsnt:ResumeSubscription` (sent to the subscription's EPR).
    ResumeSubscription,
    "ResumeSubscription"
);
empty_wsnt_message!(
    /// `wsnt:ResumeSubscriptionResponse`.
    ResumeSubscriptionResponse,
    "ResumeSubscriptionResponse"
);

impl Request for PauseSubscription {
    type Response = PauseSubscriptionResponse;
    fn action(&self) -> String {
        wsnt_action("PauseSubscription")
    }
    fn response_action(&self) -> String {
        wsnt_action("PauseSubscriptionResponse")
    }
}

impl Request for ResumeSubscription {
    type Response = ResumeSubscriptionResponse;
    fn action(&self) -> String {
        wsnt_action("ResumeSubscription")
    }
    fn response_action(&self) -> String {
        wsnt_action("ResumeSubscriptionResponse")
    }
}

// ---- GetCurrentMessage --------------------------------------------------------------------

/// `wsnt:GetCurrentMessage`: the last message of a Simple topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetCurrentMessage {
    pub topic: QName,
}

impl Message for GetCurrentMessage {
    type Error = BaseFault;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("GetCurrentMessage", &[("xmlns", ns::WSNT)]);
        write_topic(w, "Topic", "Dialect", &self.topic);
        w.end("GetCurrentMessage");
    }
    fn decode(e: &Element) -> Result<Self, BaseFault> {
        if !e.is(ns::WSNT, "GetCurrentMessage") {
            return Err(BaseFault::new(FaultType::InvalidRequest, format!("expected wsnt:GetCurrentMessage, got {}", e.name)));
        }
        let topic = e
            .child(ns::WSNT, "Topic")
            .ok_or_else(|| BaseFault::new(FaultType::InvalidTopicExpression, "GetCurrentMessage has no wsnt:Topic"))?;
        Ok(GetCurrentMessage { topic: simple_topic(topic)? })
    }
}

impl Request for GetCurrentMessage {
    type Response = GetCurrentMessageResponse;
    fn action(&self) -> String {
        wsnt_action("GetCurrentMessage")
    }
    fn response_action(&self) -> String {
        wsnt_action("GetCurrentMessageResponse")
    }
}

/// `wsnt:GetCurrentMessageResponse` as GT 4.0 answers it for a value topic: a
/// `wsrp:ResourcePropertyValueChangeNotificationType` with the property's values (serialized)
/// as NewValue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetCurrentMessageResponse {
    pub new_value: String,
}

impl Message for GetCurrentMessageResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("GetCurrentMessageResponse", &[("xmlns", ns::WSNT)])
            .start("ns1:ResourcePropertyValueChangeNotificationType", &[("xmlns:ns1", ns::WSRP)])
            .start("ns1:NewValue", &[])
            .raw(&self.new_value)
            .end("ns1:NewValue")
            .end("ns1:ResourcePropertyValueChangeNotificationType")
            .end("GetCurrentMessageResponse");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        if !e.is(ns::WSNT, "GetCurrentMessageResponse") {
            return Err(err(format!("expected wsnt:GetCurrentMessageResponse, got {}", e.name)));
        }
        let n = e.first_element().ok_or_else(|| err("GetCurrentMessageResponse is empty"))?;
        Ok(GetCurrentMessageResponse { new_value: content_of(child(n, ns::WSRP, "NewValue")?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::xml::parse;

    fn notify(content: NotifyContent) -> Notify {
        Notify {
            topic: QName::new("urn:t?a=1&b=\"2\"", "Value"),
            producer_address: "http://h:8080/wsrf/services/CounterService?x=<1>&y=é".into(),
            producer_key_name: QName::new("http://counter.com", "CounterKey"),
            producer_key: "k<&\"é€".into(),
            content,
        }
    }

    fn round_trip(n: &Notify) -> Notify {
        let xml = n.to_xml();
        let e = parse(&xml, &Default::default()).unwrap_or_else(|e| panic!("{e}: {xml}"));
        Notify::decode(&e).unwrap()
    }

    /// What the service wrote with format! before these types: the bytes must not change.
    #[test]
    fn the_service_answers_are_the_bytes_it_wrote_before() {
        let epr = Epr::with_key(
            "http://h:1/wsrf/services/SubscriptionManagerService",
            QName::new(ns::GLOBUS_CORE, "SubscriptionKey"),
            "k&1",
        );
        let before = format!(
            "<SubscribeResponse xmlns=\"{}\">{}</SubscribeResponse>",
            ns::WSNT,
            epr.to_xml("SubscriptionReference", &[WSA_DECL])
        );
        assert_eq!(SubscribeResponse { subscription: epr }.to_xml(), before);
        assert_eq!(PauseSubscriptionResponse.to_xml(), format!("<PauseSubscriptionResponse xmlns=\"{}\"/>", ns::WSNT));
        assert_eq!(ResumeSubscriptionResponse.to_xml(), format!("<ResumeSubscriptionResponse xmlns=\"{}\"/>", ns::WSNT));
        let v = "<ns1:Value xmlns:ns1=\"http://counter.com\">21</ns1:Value>";
        assert_eq!(
            GetCurrentMessageResponse { new_value: v.into() }.to_xml(),
            format!(
                "<GetCurrentMessageResponse xmlns=\"{0}\"><ns1:ResourcePropertyValueChangeNotificationType xmlns:ns1=\"{1}\"><ns1:NewValue>{2}</ns1:NewValue></ns1:ResourcePropertyValueChangeNotificationType></GetCurrentMessageResponse>",
                ns::WSNT,
                ns::WSRP,
                v
            )
        );
        let t = QName::new("http://counter.com", "Value");
        assert_eq!(
            topic_property("TopicExpression", &t),
            format!(
                "<ns2:TopicExpression ns2:Dialect=\"{}\" xmlns:ns1=\"http://counter.com\" xmlns:ns2=\"{}\">ns1:Value</ns2:TopicExpression>",
                ns::SIMPLE_TOPIC_DIALECT,
                ns::WSNT
            )
        );
        assert_eq!(
            wsnt_property("UseNotify", "a<b"),
            format!("<wsnt:UseNotify xmlns:wsnt=\"{}\">a&lt;b</wsnt:UseNotify>", ns::WSNT)
        );
    }

    fn decode<M: Message>(xml: &str) -> Result<M, M::Error> {
        M::decode(&parse(xml, &Default::default()).unwrap_or_else(|e| panic!("{e}: {xml}")))
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let sub = Subscribe {
            consumer: ConsumerReference {
                address: "https://c:8443/wsrf/services/Consumer?a=1&b=2".into(),
                properties: vec!["<c:K xmlns:c=\"urn:c\">42 &amp; é</c:K>".into()],
                parameters: vec!["<d:P xmlns:d=\"urn:d\"/>".into()],
            },
            topic: QName::new("urn:t?a=\"1\"&b", "Value"),
            use_notify: Some(false),
            initial_termination_ms: Some(1_764_700_000_123),
        };
        assert_eq!(decode::<Subscribe>(&sub.to_xml()).unwrap(), sub);
        let bare = Subscribe {
            consumer: ConsumerReference::new("http://c/x"),
            topic: QName::new("urn:t", "V"),
            use_notify: None,
            initial_termination_ms: None,
        };
        assert_eq!(decode::<Subscribe>(&bare.to_xml()).unwrap(), bare);
        let epr = Epr::with_key("http://h/s", QName::new(ns::GLOBUS_CORE, "SubscriptionKey"), "k");
        let r = SubscribeResponse { subscription: epr };
        assert_eq!(decode::<SubscribeResponse>(&r.to_xml()).unwrap(), r);
        assert_eq!(decode::<PauseSubscription>(&PauseSubscription.to_xml()).unwrap(), PauseSubscription);
        assert_eq!(decode::<ResumeSubscription>(&ResumeSubscription.to_xml()).unwrap(), ResumeSubscription);
        assert_eq!(decode::<PauseSubscriptionResponse>(&PauseSubscriptionResponse.to_xml()).unwrap(), PauseSubscriptionResponse);
        assert!(decode::<PauseSubscription>(&ResumeSubscription.to_xml()).is_err());
        let g = GetCurrentMessage { topic: QName::new("http://counter.com", "Value") };
        assert_eq!(decode::<GetCurrentMessage>(&g.to_xml()).unwrap(), g);
        let v = GetCurrentMessageResponse { new_value: "<v:S xmlns:v=\"urn:v\">a &lt; b</v:S>".into() };
        assert_eq!(decode::<GetCurrentMessageResponse>(&v.to_xml()).unwrap(), v);
        // The consumer's property: GT 4.0's shape, both holders.
        let p = parse(&sub.consumer.to_property(), &Default::default()).unwrap();
        assert!(p.is(ns::WSNT, "ConsumerReference"));
        assert_eq!(p.child(ns::WSA, "Address").unwrap().text(), sub.consumer.address);
        assert_eq!(p.child(ns::WSA, "ReferenceProperties").unwrap().first_element().unwrap().text(), "42 & é");
        assert!(parse(&ConsumerReference::new("http://c").to_property(), &Default::default())
            .unwrap()
            .child(ns::WSA, "ReferenceParameters")
            .is_some());
    }

    #[test]
    fn bad_subscribe_requests_decode_to_the_faults_ws_base_notification_names() {
        let wrap = |inner: &str| {
            format!(
                "<wsnt:Subscribe xmlns:wsnt=\"{}\" xmlns:wsa=\"{}\" xmlns:c=\"urn:c\">{inner}</wsnt:Subscribe>",
                ns::WSNT,
                ns::WSA
            )
        };
        let consumer = "<wsnt:ConsumerReference><wsa:Address>http://c/x</wsa:Address></wsnt:ConsumerReference>";
        let topic =
            |dialect: &str, text: &str| format!("<wsnt:TopicExpression Dialect=\"{dialect}\">{text}</wsnt:TopicExpression>");
        let simple = topic(ns::SIMPLE_TOPIC_DIALECT, "c:V");
        for (inner, kind) in [
            (consumer.to_string(), FaultType::InvalidTopicExpression),
            (format!("{consumer}{}", topic(ns::CONCRETE_TOPIC_DIALECT, "c:V")), FaultType::TopicPathDialectUnknown),
            (format!("{consumer}{}", topic(ns::SIMPLE_TOPIC_DIALECT, "x:V")), FaultType::InvalidTopicExpression),
            (format!("{consumer}{}", topic(ns::SIMPLE_TOPIC_DIALECT, "V")), FaultType::InvalidTopicExpression),
            (simple.clone(), FaultType::SubscribeCreationFailed),
            (format!("{consumer}{simple}<wsnt:Selector/>"), FaultType::SubscribeCreationFailed),
            (
                format!("<wsnt:ConsumerReference><wsa:Address>ftp://c/x</wsa:Address></wsnt:ConsumerReference>{simple}"),
                FaultType::SubscribeCreationFailed,
            ),
            (format!("{consumer}{simple}<wsnt:UseNotify>yes</wsnt:UseNotify>"), FaultType::SubscribeCreationFailed),
            (
                format!("{consumer}{simple}<wsnt:InitialTerminationTime>soon</wsnt:InitialTerminationTime>"),
                FaultType::UnacceptableInitialTerminationTime,
            ),
        ] {
            let e = decode::<Subscribe>(&wrap(&inner)).expect_err(&inner);
            assert_eq!(e.kind, kind, "{inner}: {}", e.description);
        }
        let ok = decode::<Subscribe>(&wrap(&format!(
            "{consumer}{simple}<wsnt:InitialTerminationTime xsi:nil=\"true\" xmlns:xsi=\"{}\"/>",
            ns::XSI
        )))
        .unwrap();
        assert_eq!((ok.topic, ok.use_notify, ok.initial_termination_ms), (QName::new("urn:c", "V"), None, None));
    }

    #[test]
    fn value_changes_and_terminations_round_trip() {
        for content in [
            NotifyContent::ValueChange {
                old: Some("<ns1:Value xmlns:ns1=\"http://counter.com\">1</ns1:Value>".into()),
                new: "<ns1:Value xmlns:ns1=\"http://counter.com\">a &lt;&amp; é</ns1:Value>".into(),
            },
            NotifyContent::ValueChange { old: None, new: "<v:S xmlns:v=\"urn:v\">Staged</v:S><v:S xmlns:v=\"urn:v\"/>".into() },
            NotifyContent::ValueChange { old: Some(String::new()), new: String::new() },
            NotifyContent::Termination { time: "2026-12-02T18:00:00.123Z".into() },
        ] {
            let n = notify(content);
            assert_eq!(round_trip(&n), n);
        }
    }

    #[test]
    fn the_envelope_carries_the_addressing_headers_and_the_body() {
        let n = notify(NotifyContent::Termination { time: "2026-12-02T18:00:00Z".into() });
        let env = notify_envelope(
            "uuid:1",
            "http://c/x?a=1&b=<2>",
            &["<c:K xmlns:c=\"urn:c\" soapenv:mustUnderstand=\"0\">42</c:K>".into()],
            &n,
        );
        let e = parse(&env, &Default::default()).unwrap();
        let h = e.child(ns::SOAPENV, "Header").unwrap();
        assert_eq!(h.child(ns::WSA, "MessageID").unwrap().text(), "uuid:1");
        assert_eq!(h.child(ns::WSA, "To").unwrap().text(), "http://c/x?a=1&b=<2>");
        assert_eq!(h.child(ns::WSA, "Action").unwrap().text(), format!("{}/Notify", ns::WSNT_ACTION));
        assert_eq!(h.child("urn:c", "K").unwrap().text(), "42");
        let body = e.child(ns::SOAPENV, "Body").unwrap().first_element().unwrap();
        assert_eq!(Notify::decode(body).unwrap(), n);
    }
}
