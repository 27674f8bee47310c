//! WS-BaseFaults (2004/06): every WSRF fault vws raises, written as GT 4.0 writes them — a SOAP
//! fault with `faultcode` `soapenv:Server.generalException` whose `detail` holds the typed fault
//! element with Timestamp, Originator, ErrorCode, Description and FaultCause. Unlike GT 4.0 we
//! also fill `faultstring`, because GT clients print it as `Error: <faultstring>`.

use crate::soap::envelope::{FaultCode, SoapFault};
use crate::soap::epr::Epr;
use crate::soap::ns;
use crate::soap::time;
use crate::soap::writer::XmlWriter;

/// The fault element types vws raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultType {
    /// WS-ResourceProperties' ResourceUnknownFault.
    RpResourceUnknown,
    InvalidResourcePropertyQName,
    InvalidQueryExpression,
    QueryEvaluationError,
    UnknownQueryExpressionDialect,
    InvalidSetResourcePropertiesRequestContent,
    UnableToModifyResourceProperty,
    SetResourcePropertyRequestFailed,
    /// WS-ResourceLifetime's ResourceUnknownFault.
    RlResourceUnknown,
    ResourceNotDestroyed,
    UnableToSetTerminationTime,
    TerminationTimeChangeRejected,
    /// WS-BaseNotification faults.
    NtResourceUnknown,
    TopicNotSupported,
    InvalidTopicExpression,
    TopicPathDialectUnknown,
    NoCurrentMessageOnTopic,
    SubscribeCreationFailed,
    UnacceptableInitialTerminationTime,
    /// vws' own faults (namespace [`ns::VWS`]).
    InvalidRequest,
    UnknownOperation,
    InvalidDescription,
    PolicyRejected,
    AuthorizationFailed,
    CreationFailed,
    /// The operation is not allowed in the workspace's current state.
    InvalidState,
    /// The hypervisor (or one of its tools) failed; the Description carries what it said.
    HypervisorFailed,
    /// A host resource ran out (address pool, disk space).
    ResourceExhausted,
    /// Repository: the workspace is checked out by another holder (named in the Description).
    WorkspaceLocked,
    /// Repository: a refinement leaves the original's ranges (the field is the ErrorCode).
    RefineOutOfRange,
    /// Repository: the workspace is Corrupted and cannot be cloned.
    WorkspaceCorrupted,
    /// Repository: an image's bytes do not hash to the expected SHA-256.
    DigestMismatch,
    /// Repository: the image store's site or owner quota would be exceeded.
    QuotaExceeded,
    /// Repository: an image URL with a scheme the stager does not read.
    UnsupportedScheme,
    /// A Manager host's remote site Repository (`repository.url`) cannot be reached or did not
    /// answer in time (the Description names its URL and the cause; ErrorCode is the URL).
    RepositoryUnavailable,
    Internal,
}

impl FaultType {
    pub fn qname(self) -> (&'static str, &'static str) {
        use FaultType::*;
        match self {
            RpResourceUnknown => (ns::WSRP, "ResourceUnknownFault"),
            InvalidResourcePropertyQName => (ns::WSRP, "InvalidResourcePropertyQNameFault"),
            InvalidQueryExpression => (ns::WSRP, "InvalidQueryExpressionFault"),
            QueryEvaluationError => (ns::WSRP, "QueryEvaluationErrorFault"),
            UnknownQueryExpressionDialect => (ns::WSRP, "UnknownQueryExpressionDialectFault"),
            InvalidSetResourcePropertiesRequestContent => (ns::WSRP, "InvalidSetResourcePropertiesRequestContentFault"),
            UnableToModifyResourceProperty => (ns::WSRP, "UnableToModifyResourcePropertyFault"),
            SetResourcePropertyRequestFailed => (ns::WSRP, "SetResourcePropertyRequestFailedFault"),
            RlResourceUnknown => (ns::WSRL, "ResourceUnknownFault"),
            ResourceNotDestroyed => (ns::WSRL, "ResourceNotDestroyedFault"),
            UnableToSetTerminationTime => (ns::WSRL, "UnableToSetTerminationTimeFault"),
            TerminationTimeChangeRejected => (ns::WSRL, "TerminationTimeChangeRejectedFault"),
            NtResourceUnknown => (ns::WSNT, "ResourceUnknownFault"),
            TopicNotSupported => (ns::WSNT, "TopicNotSupportedFault"),
            InvalidTopicExpression => (ns::WSNT, "InvalidTopicExpressionFault"),
            TopicPathDialectUnknown => (ns::WSNT, "TopicPathDialectUnknownFault"),
            NoCurrentMessageOnTopic => (ns::WSNT, "NoCurrentMessageOnTopicFault"),
            SubscribeCreationFailed => (ns::WSNT, "SubscribeCreationFailedFault"),
            UnacceptableInitialTerminationTime => (ns::WSNT, "UnacceptableInitialTerminationTimeFault"),
            InvalidRequest => (ns::VWS, "InvalidRequestFault"),
            UnknownOperation => (ns::VWS, "UnknownOperationFault"),
            InvalidDescription => (ns::VWS, "InvalidDescriptionFault"),
            PolicyRejected => (ns::VWS, "PolicyRejectedFault"),
            AuthorizationFailed => (ns::VWS, "AuthorizationFault"),
            CreationFailed => (ns::VWS, "CreationFault"),
            InvalidState => (ns::VWS, "InvalidStateFault"),
            HypervisorFailed => (ns::VWS, "HypervisorFault"),
            ResourceExhausted => (ns::VWS, "ResourceExhaustedFault"),
            WorkspaceLocked => (ns::VWS, "WorkspaceLockedFault"),
            RefineOutOfRange => (ns::VWS, "RefineOutOfRangeFault"),
            WorkspaceCorrupted => (ns::VWS, "WorkspaceCorruptedFault"),
            DigestMismatch => (ns::VWS, "DigestMismatchFault"),
            QuotaExceeded => (ns::VWS, "QuotaExceededFault"),
            UnsupportedScheme => (ns::VWS, "UnsupportedSchemeFault"),
            RepositoryUnavailable => (ns::VWS, "RepositoryUnavailableFault"),
            Internal => (ns::VWS, "InternalFault"),
        }
    }

    /// Faults caused by the request rather than by the server.
    fn is_client(self) -> bool {
        !matches!(
            self,
            FaultType::Internal
                | FaultType::RepositoryUnavailable
                | FaultType::ResourceNotDestroyed
                | FaultType::SetResourcePropertyRequestFailed
                | FaultType::HypervisorFailed
                | FaultType::ResourceExhausted
        )
    }
}

/// A WS-BaseFault: what went wrong, why, and where.
#[derive(Clone, Debug)]
pub struct BaseFault {
    pub kind: FaultType,
    pub description: String,
    pub originator: Option<Epr>,
    /// (dialect URI, code): which rule or check raised the fault.
    pub error_code: Option<(String, String)>,
    pub cause: Option<Box<BaseFault>>,
}

/// Dialect of vws error codes (policy rule names, validation paths).
pub const VWS_ERROR_DIALECT: &str = "http://vws.dev/2026/11/fault/rule";

impl BaseFault {
    pub fn new(kind: FaultType, description: impl Into<String>) -> Self {
        BaseFault { kind, description: description.into(), originator: None, error_code: None, cause: None }
    }
    pub fn originator(mut self, epr: Epr) -> Self {
        self.originator = Some(epr);
        self
    }
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.error_code = Some((VWS_ERROR_DIALECT.to_string(), code.into()));
        self
    }
    pub fn caused_by(mut self, cause: BaseFault) -> Self {
        self.cause = Some(Box::new(cause));
        self
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        BaseFault::new(FaultType::Internal, format!("internal error: {msg}"))
    }

    /// The fault chain as one line: "outer: cause: cause".
    pub fn message(&self) -> String {
        let mut s = self.description.clone();
        let mut c = self.cause.as_deref();
        while let Some(f) = c {
            s.push_str(": ");
            s.push_str(&f.description);
            c = f.cause.as_deref();
        }
        s
    }

    fn write_content(&self, w: &mut XmlWriter, now: &str) {
        w.leaf("wsbf:Timestamp", &[], now);
        if let Some(o) = &self.originator {
            o.encode(w, "wsbf:Originator", &[crate::soap::epr::WSA_DECL]);
        }
        if let Some((dialect, code)) = &self.error_code {
            w.leaf("wsbf:ErrorCode", &[("dialect", dialect)], code);
        }
        w.leaf("wsbf:Description", &[], &self.description);
        if let Some(c) = &self.cause {
            w.start("wsbf:FaultCause", &[]);
            c.write_content(w, now);
            w.end("wsbf:FaultCause");
        }
    }

    /// The typed fault element for a SOAP fault's `detail`.
    pub fn detail_xml(&self) -> String {
        let (fns, local) = self.kind.qname();
        let now = time::format_ms(time::now_ms());
        let tag = format!("f:{local}");
        let mut w = XmlWriter::with_capacity(512);
        w.start(&tag, &[("xmlns:f", fns), ("xmlns:wsbf", ns::WSBF)]);
        self.write_content(&mut w, &now);
        w.end(&tag);
        w.into_string()
    }
}

impl std::fmt::Display for BaseFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl From<BaseFault> for SoapFault {
    fn from(b: BaseFault) -> Self {
        let (_, local) = b.kind.qname();
        let code = if b.kind.is_client() { FaultCode::ServerGeneral } else { FaultCode::Server };
        SoapFault { code, string: format!("{local}: {}", b.message()), detail: Some(b.detail_xml()), status: 500 }
    }
}

impl From<crate::store::StoreError> for BaseFault {
    fn from(e: crate::store::StoreError) -> Self {
        BaseFault::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::xml::{parse, Limits};

    #[test]
    fn detail_is_a_base_fault_with_cause() {
        let f = BaseFault::new(FaultType::TerminationTimeChangeRejected, "too far")
            .code("max_lifetime")
            .caused_by(BaseFault::new(FaultType::InvalidRequest, "inner"));
        let soap: SoapFault = f.into();
        assert_eq!(soap.status, 500);
        assert!(soap.string.contains("TerminationTimeChangeRejectedFault: too far: inner"));
        let d = parse(soap.detail.as_deref().unwrap(), &Limits::default()).unwrap();
        assert!(d.is(ns::WSRL, "TerminationTimeChangeRejectedFault"));
        let ts = d.child(ns::WSBF, "Timestamp").unwrap().text();
        assert!(time::parse_ms(&ts).is_some(), "{ts}");
        assert_eq!(d.child(ns::WSBF, "ErrorCode").unwrap().text(), "max_lifetime");
        assert_eq!(d.child(ns::WSBF, "Description").unwrap().text(), "too far");
        let cause = d.child(ns::WSBF, "FaultCause").unwrap();
        assert_eq!(cause.child(ns::WSBF, "Description").unwrap().text(), "inner");
    }
}
