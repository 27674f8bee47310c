//! The WS-BaseNotification `wsnt:Notify` message as vwsd sends it to consumers (GT 4.0's shape:
//! one `NotificationMessage` with Topic, ProducerReference and either a
//! `wsrp:ResourcePropertyValueChangeNotification` or a `wsrl:TerminationTime`), one type with
//! one encoder and one decoder (see [`crate::soap::message`]), and the envelope around it
//! ([`notify_envelope`]). Property values travel as serialized XML, copied without parsing.

use crate::soap::message::{DecodeError, Message};
use crate::soap::ns;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::{Element, Node, QName};

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

/// Serialized children of `e` (elements as standalone fragments, text escaped).
fn content_of(e: &Element) -> String {
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
