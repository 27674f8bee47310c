//! One codec per message: every operation's request and response is one Rust type implementing
//! [`Message`] (one `encode` to the Body's child, one `decode` from it), used by the service that
//! answers it and by the client that sends it. A request also names its wsa:Actions and its
//! response type ([`Request`]), so the client's `Client::invoke` is typed end to end.
//!
//! The message types live in the lowest layer both sides may import: the WSRF ones in
//! `wsrf::messages`, the factory's and the Manager's in `workspace::messages`.

use super::writer::XmlWriter;
use super::xml::Element;

/// A Body payload with its one encoder and one decoder.
pub trait Message: Sized {
    /// What a refused payload becomes (the service maps it to its fault; the client reports it).
    type Error: std::fmt::Display;
    /// Write the Body's child element.
    fn encode(&self, w: &mut XmlWriter);
    /// Read the Body's child element.
    fn decode(e: &Element) -> Result<Self, Self::Error>;
    /// The encoded element as a string.
    fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        self.encode(&mut w);
        w.into_string()
    }
}

/// A request message: its wsa:Action, and the message that answers it.
pub trait Request: Message {
    type Response: Message;
    /// wsa:Action (and SOAPAction) of the request.
    fn action(&self) -> String;
    /// wsa:Action of the response.
    fn response_action(&self) -> String;
}

/// A decode error of a message that has no fault vocabulary of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}
