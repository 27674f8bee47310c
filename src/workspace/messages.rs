//! The workspace port types' messages, one type each with one encoder and one decoder (see
//! [`crate::soap::message`]): the factory's `create` and the Manager's operations sent to a
//! workspace's EPR (`deploy`, `undeploy`, the VM operations, `console`), with their responses.
//! `services/factory.rs` and `services/manager.rs` decode the requests and encode the answers;
//! `client::Client::invoke` encodes the same requests and decodes the same answers.
//!
//! A refused request decodes to a [`DecodeError`] whose text the service sends back in its
//! fault (`InvalidDescriptionFault` for create, `InvalidRequestFault` for the Manager).

use crate::soap::epr::{Epr, WSA_DECL};
use crate::soap::message::{DecodeError, Message, Request};
use crate::soap::ns::{MANAGER_PORT_TYPE, NIMBUS, VWS, WSA};
use crate::soap::writer::XmlWriter;
use crate::soap::xml::Element;

/// The factory's port type name (in its actions).
pub const FACTORY_PORT_TYPE: &str = "WorkspaceFactoryPortType";

pub(super) fn err(msg: String) -> DecodeError {
    DecodeError(msg)
}

/// Is `e` the vws element `local`? (else a decode error naming both).
pub(super) fn expect(e: &Element, local: &str) -> Result<(), DecodeError> {
    if e.is(VWS, local) {
        Ok(())
    } else {
        Err(err(format!("expected {{{VWS}}}{local}, got {}", e.name)))
    }
}

/// `<n:CurrentState>` of a state name (also the `CurrentState` resource property).
pub fn current_state_xml(state: &str) -> String {
    let mut w = XmlWriter::with_capacity(96);
    write_current_state(&mut w, state);
    w.into_string()
}

fn write_current_state(w: &mut XmlWriter, state: &str) {
    w.leaf("n:CurrentState", &[("xmlns:n", NIMBUS)], state);
}

// ---- factory: create ----------------------------------------------------------------------

/// `{vws}create`: a workspace description (`{vws}virtualWorkspace`), sent as the element read.
#[derive(Clone, Debug)]
pub struct Create {
    pub description: Element,
}

impl Message for Create {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("vws:create", &[("xmlns:vws", VWS)]).raw(&self.description.to_fragment()).end("vws:create");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "create")?;
        let vw =
            e.child(VWS, "virtualWorkspace").ok_or_else(|| err(format!("create needs a {{{VWS}}}virtualWorkspace element")))?;
        Ok(Create { description: vw.clone() })
    }
}

impl Request for Create {
    type Response = CreateResponse;
    fn action(&self) -> String {
        format!("{VWS}/{FACTORY_PORT_TYPE}/createRequest")
    }
    fn response_action(&self) -> String {
        format!("{VWS}/{FACTORY_PORT_TYPE}/createResponse")
    }
}

/// The new workspace's EPR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateResponse {
    pub epr: Epr,
}

impl Message for CreateResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("createResponse", &[("xmlns", VWS)]);
        self.epr.encode(w, "wsa:EndpointReference", &[WSA_DECL]);
        w.end("createResponse");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "createResponse")?;
        let epr = e.child(WSA, "EndpointReference").ok_or_else(|| err("createResponse without EPR".into()))?;
        Ok(CreateResponse { epr: Epr::from_element(epr).map_err(err)? })
    }
}

// ---- Manager: deploy, undeploy, VM operations ---------------------------------------------

/// The Manager's operations answered with the workspace's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagerOp {
    Deploy,
    Undeploy,
    Start,
    Stop,
    Pause,
    Unpause,
    Reboot,
    Save,
    Restore,
}

impl ManagerOp {
    pub const ALL: [ManagerOp; 9] = [
        ManagerOp::Deploy,
        ManagerOp::Undeploy,
        ManagerOp::Start,
        ManagerOp::Stop,
        ManagerOp::Pause,
        ManagerOp::Unpause,
        ManagerOp::Reboot,
        ManagerOp::Save,
        ManagerOp::Restore,
    ];

    /// The Body element's local name.
    pub fn name(self) -> &'static str {
        match self {
            ManagerOp::Deploy => "deploy",
            ManagerOp::Undeploy => "undeploy",
            ManagerOp::Start => "start",
            ManagerOp::Stop => "stop",
            ManagerOp::Pause => "pause",
            ManagerOp::Unpause => "unpause",
            ManagerOp::Reboot => "reboot",
            ManagerOp::Save => "save",
            ManagerOp::Restore => "restore",
        }
    }

    pub fn from_name(local: &str) -> Option<ManagerOp> {
        ManagerOp::ALL.into_iter().find(|o| o.name() == local)
    }

    /// The operation a Body element asks for, if it is one of these.
    pub fn of(e: &Element) -> Option<ManagerOp> {
        (e.name.ns == VWS).then(|| ManagerOp::from_name(&e.name.local)).flatten()
    }
}

/// A Manager operation; `hot` (`<hot>true</hot>`) only with deploy: boot once to the ready
/// line and pause, so start only resumes. The others take no arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManagerRequest {
    pub op: ManagerOp,
    pub hot: bool,
}

impl ManagerRequest {
    pub fn new(op: ManagerOp) -> Self {
        ManagerRequest { op, hot: false }
    }
}

impl Message for ManagerRequest {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let op = self.op.name();
        if self.op == ManagerOp::Deploy && self.hot {
            w.start(op, &[("xmlns", VWS)]).leaf("hot", &[], "true").end(op);
        } else {
            w.empty(op, &[("xmlns", VWS)]);
        }
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let op = ManagerOp::of(e).ok_or_else(|| err(format!("{} is not a Manager operation", e.name)))?;
        let mut hot = false;
        for c in e.elements() {
            if op != ManagerOp::Deploy {
                return Err(err(format!("{} takes no arguments; got element {}", e.name, c.name)));
            }
            if c.name.ns == VWS && c.name.local == "hot" {
                hot = match c.text().trim() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => return Err(err(format!("deploy: <hot> must be true or false, not '{other}'"))),
                };
            } else {
                return Err(err(format!("deploy takes only <hot>; got element {}", c.name)));
            }
        }
        Ok(ManagerRequest { op, hot })
    }
}

impl Request for ManagerRequest {
    type Response = ManagerResponse;
    fn action(&self) -> String {
        format!("{VWS}/{MANAGER_PORT_TYPE}/{}Request", self.op.name())
    }
    fn response_action(&self) -> String {
        format!("{VWS}/{MANAGER_PORT_TYPE}/{}Response", self.op.name())
    }
}

/// `{vws}<op>Response`: the workspace's state after the operation (Nimbus' `CurrentState`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerResponse {
    pub op: ManagerOp,
    pub state: String,
}

impl Message for ManagerResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let tag = format!("{}Response", self.op.name());
        w.start(&tag, &[("xmlns", VWS)]);
        write_current_state(w, &self.state);
        w.end(&tag);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let op = e
            .name
            .local
            .strip_suffix("Response")
            .filter(|_| e.name.ns == VWS)
            .and_then(ManagerOp::from_name)
            .ok_or_else(|| err(format!("{} is not a Manager response", e.name)))?;
        let state = e.child(NIMBUS, "CurrentState").map(|s| s.text().trim().to_string()).unwrap_or_default();
        Ok(ManagerResponse { op, state })
    }
}

// ---- Manager: console ---------------------------------------------------------------------

/// `{vws}console`: the guest's serial output from `offset` on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Console {
    pub offset: u64,
}

impl Message for Console {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("console", &[("xmlns", VWS)]).leaf("offset", &[], &self.offset.to_string()).end("console");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "console")?;
        let mut offset = 0u64;
        for c in e.elements() {
            if c.name.ns == VWS && c.name.local == "offset" {
                offset =
                    c.text().trim().parse().map_err(|_| err(format!("console: offset '{}' is not a number", c.text().trim())))?;
            } else {
                return Err(err(format!("console takes <offset>; got element {}", c.name)));
            }
        }
        Ok(Console { offset })
    }
}

impl Request for Console {
    type Response = ConsoleResponse;
    fn action(&self) -> String {
        format!("{VWS}/{MANAGER_PORT_TYPE}/consoleRequest")
    }
    fn response_action(&self) -> String {
        format!("{VWS}/{MANAGER_PORT_TYPE}/consoleResponse")
    }
}

/// The console text read and the offset after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsoleResponse {
    pub offset: u64,
    pub text: String,
}

impl Message for ConsoleResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("consoleResponse", &[("xmlns", VWS)])
            .leaf("offset", &[], &self.offset.to_string())
            .leaf("text", &[], &self.text)
            .end("consoleResponse");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "consoleResponse")?;
        let offset = e
            .child(VWS, "offset")
            .and_then(|o| o.text().trim().parse().ok())
            .ok_or_else(|| err("consoleResponse without a numeric offset".into()))?;
        Ok(ConsoleResponse { offset, text: e.child(VWS, "text").map(|t| t.text()).unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::xml::{parse, Limits, QName};

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: &M) {
        let xml = m.to_xml();
        let e = parse(&xml, &Limits::default()).unwrap_or_else(|err| panic!("{err}: {xml}"));
        let back = M::decode(&e).unwrap_or_else(|err| panic!("{err}: {xml}"));
        assert_eq!(&back, m, "{xml}");
    }

    #[test]
    fn manager_messages_round_trip() {
        for op in ManagerOp::ALL {
            round_trip(&ManagerRequest::new(op));
            round_trip(&ManagerResponse { op, state: "Running".into() });
        }
        round_trip(&ManagerRequest { op: ManagerOp::Deploy, hot: true });
        round_trip(&Console { offset: 12345 });
        round_trip(&ConsoleResponse { offset: 7, text: "boot <ok> & \"ready\" ünï\r\n\u{1b}[0m".replace('\u{1b}', "") });
        let epr = Epr::with_key("http://h:1/wsrf/services/WorkspaceService?a=1&b=<2>", QName::new(VWS, "WorkspaceKey"), "k&1");
        round_trip(&CreateResponse { epr });
    }

    #[test]
    fn manager_decode_errors_name_the_problem() {
        let l = Limits::default();
        let e = parse(&format!("<start xmlns=\"{VWS}\"><x/></start>"), &l).unwrap();
        assert!(ManagerRequest::decode(&e).unwrap_err().0.contains("takes no arguments; got element"));
        let e = parse(&format!("<deploy xmlns=\"{VWS}\"><hot>maybe</hot></deploy>"), &l).unwrap();
        assert!(ManagerRequest::decode(&e).unwrap_err().0.contains("must be true or false, not 'maybe'"));
        let e = parse(&format!("<console xmlns=\"{VWS}\"><offset>-1</offset></console>"), &l).unwrap();
        assert!(Console::decode(&e).unwrap_err().0.contains("is not a number"));
    }

    #[test]
    fn create_carries_the_description() {
        let d =
            parse(&format!("<virtualWorkspace xmlns=\"{VWS}\"><name>a &amp; b</name></virtualWorkspace>"), &Limits::default())
                .unwrap();
        let xml = Create { description: d }.to_xml();
        let back = Create::decode(&parse(&xml, &Limits::default()).unwrap()).unwrap();
        assert_eq!(back.description.child(VWS, "name").unwrap().text(), "a & b");
    }
}
