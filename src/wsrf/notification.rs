//! WS-BaseNotification (2004/06). vws publishes no topics yet, so Subscribe and
//! GetCurrentMessage are answered with the specification's TopicNotSupportedFault naming the
//! topic that was asked for.

use super::faults::{BaseFault, FaultType};
use crate::soap::ns;
use crate::soap::xml::Element;

/// The topic expression text of a Subscribe / GetCurrentMessage request, resolved when simple.
fn topic_of(req: &Element) -> String {
    let t = req.child(ns::WSNT, "Topic").or_else(|| req.child(ns::WSNT, "TopicExpression"));
    match t {
        Some(t) => match t.resolve_qname(&t.text()) {
            Ok(q) => q.clark(),
            Err(_) => t.text().trim().to_string(),
        },
        None => "(none)".to_string(),
    }
}

/// The fault for any notification request until topics exist.
pub fn unsupported(req: &Element) -> BaseFault {
    BaseFault::new(
        FaultType::TopicNotSupported,
        format!("topic {} is not supported: this service publishes no notification topics", topic_of(req)),
    )
}
