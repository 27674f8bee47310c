//! Namespace URIs and action URIs of the GT 4.0 wire format (SOAP 1.1, WS-Addressing 2004/03,
//! WSRF 2004/06 drafts) and of vws' own schema.

pub const SOAPENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const XSD: &str = "http://www.w3.org/2001/XMLSchema";
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
pub const WSA: &str = "http://schemas.xmlsoap.org/ws/2004/03/addressing";
pub const WSA_ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/03/addressing/role/anonymous";
pub const WSA_FAULT_ACTION: &str = "http://schemas.xmlsoap.org/ws/2004/03/addressing/fault";
pub const WSRP: &str = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties-1.2-draft-01.xsd";
pub const WSRL: &str = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceLifetime-1.2-draft-01.xsd";
pub const WSBF: &str = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-BaseFaults-1.2-draft-01.xsd";
pub const WSNT: &str = "http://docs.oasis-open.org/wsn/2004/06/wsn-WS-BaseNotification-1.2-draft-01.xsd";
pub const WSRP_ACTION: &str = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties";
pub const WSRL_ACTION: &str = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceLifetime";
pub const WSNT_ACTION: &str = "http://docs.oasis-open.org/wsn/2004/06/wsn-WS-BaseNotification";
/// WS-Topics (2004/06) topic expression dialects; only Simple is evaluated (as in GT 4.0).
pub const SIMPLE_TOPIC_DIALECT: &str = "http://docs.oasis-open.org/wsn/2004/06/TopicExpression/Simple";
pub const CONCRETE_TOPIC_DIALECT: &str = "http://docs.oasis-open.org/wsn/2004/06/TopicExpression/Concrete";
pub const FULL_TOPIC_DIALECT: &str = "http://docs.oasis-open.org/wsn/2004/06/TopicExpression/Full";
/// GT 4.0's core namespace (`SubscriptionKey`).
pub const GLOBUS_CORE: &str = "http://www.globus.org/namespaces/2004/06/core";
/// GT 4.0's notification message types (`ResourcePropertyValueChangeNotificationElementType`).
pub const GLOBUS_NOTIFICATION: &str = "http://wsrf.globus.org/core/notification";
pub const XPATH_DIALECT: &str = "http://www.w3.org/TR/1999/REC-xpath-19991116";

/// vws' own namespace: workspace description, key, port types and faults.
pub const VWS: &str = "http://vws.dev/2026/11/workspace";
/// Nimbus' workspace namespace; vws exposes a few Nimbus-compatible properties in it so that
/// generic GT4 clients pointed at workspaces the Nimbus way keep working.
pub const NIMBUS: &str = "http://www.globus.org/2008/06/workspace";
/// The GT 4.0 counter sample's namespace (vws hosts that sample for interoperability checks).
pub const COUNTER: &str = "http://counter.com";
/// The Manager's port type (its operations are sent to a workspace's EPR).
pub const MANAGER_PORT_TYPE: &str = "WorkspaceManagerPortType";
