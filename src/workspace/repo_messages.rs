//! The Repository port type's messages that one vwsd sends another (issue 12: a Manager host
//! using a remote site Repository): the checkout lock operations (`checkout`, `renew`,
//! `release`, `breakLock`) and their `lock` answers, and `enrol` / `withdraw`, by which a
//! Manager host keeps its workspaces in the site's catalogue. One type per message, one encoder
//! and one decoder each (see [`crate::soap::message`]); `services/repository.rs` decodes the
//! requests and encodes the answers, its remote `Checkouts` encodes the requests with
//! `Client::invoke` and decodes the answers with the same code.

use crate::soap::epr::{Epr, WSA_DECL};
use crate::soap::message::{DecodeError, Message, Request};
use crate::soap::ns::{VWS, WSA};
use crate::soap::writer::XmlWriter;
use crate::soap::xml::Element;

/// The Repository's port type name (in its actions).
pub const REPOSITORY_PORT_TYPE: &str = "RepositoryPortType";

fn err(msg: String) -> DecodeError {
    DecodeError(msg)
}

fn expect(e: &Element, local: &str) -> Result<(), DecodeError> {
    if e.is(VWS, local) {
        Ok(())
    } else {
        Err(err(format!("expected {{{VWS}}}{local}, got {}", e.name)))
    }
}

fn text_of(e: &Element, local: &str) -> Option<String> {
    e.child(VWS, local).map(|c| c.text().trim().to_string()).filter(|t| !t.is_empty())
}

fn action(op: &str, suffix: &str) -> String {
    format!("{VWS}/{REPOSITORY_PORT_TYPE}/{op}{suffix}")
}

/// Which workspace a Repository operation names: `<workspace>KEY</workspace>` (what this crate
/// sends) or the workspace's `wsa:EndpointReference` (kept as read; the service takes the key
/// from its reference properties).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Key(String),
    Epr(Epr),
}

impl Target {
    fn encode(&self, w: &mut XmlWriter) {
        match self {
            Target::Key(k) => {
                w.leaf("workspace", &[], k);
            }
            Target::Epr(e) => e.encode(w, "wsa:EndpointReference", &[WSA_DECL]),
        }
    }

    fn decode(e: &Element) -> Result<Option<Target>, DecodeError> {
        if let Some(k) = text_of(e, "workspace") {
            return Ok(Some(Target::Key(k)));
        }
        match e.child(WSA, "EndpointReference") {
            Some(x) => Ok(Some(Target::Epr(Epr::from_element(x).map_err(err)?))),
            None => Ok(None),
        }
    }
}

// ---- checkout lock ------------------------------------------------------------------------

/// The lock operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOp {
    Checkout,
    Renew,
    Release,
    BreakLock,
}

impl LockOp {
    pub const ALL: [LockOp; 4] = [LockOp::Checkout, LockOp::Renew, LockOp::Release, LockOp::BreakLock];

    pub fn name(self) -> &'static str {
        match self {
            LockOp::Checkout => "checkout",
            LockOp::Renew => "renew",
            LockOp::Release => "release",
            LockOp::BreakLock => "breakLock",
        }
    }

    /// The operation of a Body element, if it is one.
    pub fn of(e: &Element) -> Option<LockOp> {
        LockOp::ALL.into_iter().find(|op| e.is(VWS, op.name()))
    }
}

/// `checkout` / `renew` / `release` / `breakLock`: the workspace, the Manager that holds (or
/// takes) the lock, the lease asked for, and — sent by a Manager host for the user it acts
/// for — the holder's DN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRequest {
    pub op: LockOp,
    /// None only when decoding a request without one (the service faults).
    pub target: Option<Target>,
    pub manager: Option<String>,
    pub lease_secs: Option<u64>,
    pub holder: Option<String>,
}

impl LockRequest {
    pub fn new(op: LockOp, key: &str) -> LockRequest {
        LockRequest { op, target: Some(Target::Key(key.to_string())), manager: None, lease_secs: None, holder: None }
    }
}

impl Message for LockRequest {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let op = self.op.name();
        w.start(op, &[("xmlns", VWS)]);
        if let Some(t) = &self.target {
            t.encode(w);
        }
        if let Some(m) = &self.manager {
            w.leaf("manager", &[], m);
        }
        if let Some(s) = self.lease_secs {
            w.leaf("leaseSeconds", &[], &s.to_string());
        }
        if let Some(h) = &self.holder {
            w.leaf("holder", &[], h);
        }
        w.end(op);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let op = LockOp::of(e).ok_or_else(|| err(format!("{} is not a Repository lock operation", e.name)))?;
        let lease_secs = match e.child(VWS, "leaseSeconds") {
            None => None,
            Some(l) => Some(
                l.text()
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0 && *s <= 86400 * 365)
                    .ok_or_else(|| err(format!("leaseSeconds '{}' is not 1..31536000", l.text().trim())))?,
            ),
        };
        Ok(LockRequest {
            op,
            target: Target::decode(e)?,
            manager: text_of(e, "manager"),
            lease_secs,
            holder: text_of(e, "holder"),
        })
    }
}

impl Request for LockRequest {
    type Response = LockResponse;
    fn action(&self) -> String {
        action(self.op.name(), "Request")
    }
    fn response_action(&self) -> String {
        action(self.op.name(), "Response")
    }
}

/// A checkout lock as the Repository shows it (times as xsd:dateTime text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub workspace: String,
    pub holder: String,
    pub manager: String,
    pub since: String,
    pub until: String,
}

impl LockInfo {
    /// `<w:lock …/>` (also the Repository's `lock` resource property).
    pub fn encode(&self, w: &mut XmlWriter) {
        w.empty(
            "w:lock",
            &[
                ("xmlns:w", VWS),
                ("workspace", &self.workspace),
                ("holder", &self.holder),
                ("manager", &self.manager),
                ("since", &self.since),
                ("until", &self.until),
            ],
        );
    }

    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::with_capacity(256);
        self.encode(&mut w);
        w.into_string()
    }

    pub fn decode(e: &Element) -> Result<LockInfo, DecodeError> {
        let a = |n: &str| e.attr("", n).map(str::to_string).ok_or_else(|| err(format!("lock without attribute {n}")));
        Ok(LockInfo {
            workspace: a("workspace")?,
            holder: a("holder")?,
            manager: a("manager")?,
            since: a("since")?,
            until: a("until")?,
        })
    }
}

/// The lock after the operation (none when it is gone or was never there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockResponse {
    pub op: LockOp,
    pub lock: Option<LockInfo>,
}

impl Message for LockResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let tag = format!("{}Response", self.op.name());
        w.start(&tag, &[("xmlns", VWS)]);
        if let Some(l) = &self.lock {
            l.encode(w);
        }
        w.end(&tag);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let op = LockOp::ALL
            .into_iter()
            .find(|op| e.is(VWS, &format!("{}Response", op.name())))
            .ok_or_else(|| err(format!("{} is not a Repository lock answer", e.name)))?;
        let lock = e.child(VWS, "lock").map(LockInfo::decode).transpose()?;
        Ok(LockResponse { op, lock })
    }
}

// ---- enrol / withdraw ---------------------------------------------------------------------

/// `enrol`: a Manager host puts (or updates) one of its workspaces in the site's catalogue —
/// its EPR there, owner, state, termination time and description.
#[derive(Clone, Debug)]
pub struct Enrol {
    pub epr: Epr,
    /// Owner DN (empty: anonymous).
    pub owner: String,
    pub state: String,
    /// xsd:dateTime, when the workspace has a termination time.
    pub termination: Option<String>,
    /// The `{vws}virtualWorkspace` element.
    pub description: Element,
}

impl Message for Enrol {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("enrol", &[("xmlns", VWS)]);
        self.epr.encode(w, "wsa:EndpointReference", &[WSA_DECL]);
        w.leaf("owner", &[], &self.owner).leaf("state", &[], &self.state);
        if let Some(t) = &self.termination {
            w.leaf("terminationTime", &[], t);
        }
        w.raw(&self.description.to_fragment());
        w.end("enrol");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "enrol")?;
        let epr =
            e.child(WSA, "EndpointReference").ok_or_else(|| err("enrol needs the workspace's wsa:EndpointReference".into()))?;
        let description =
            e.child(VWS, "virtualWorkspace").ok_or_else(|| err(format!("enrol needs a {{{VWS}}}virtualWorkspace element")))?;
        Ok(Enrol {
            epr: Epr::from_element(epr).map_err(err)?,
            owner: e.child(VWS, "owner").map(|o| o.text().trim().to_string()).unwrap_or_default(),
            state: text_of(e, "state").ok_or_else(|| err("enrol needs <state>".into()))?,
            termination: text_of(e, "terminationTime"),
            description: description.clone(),
        })
    }
}

impl Request for Enrol {
    type Response = EnrolResponse;
    fn action(&self) -> String {
        action("enrol", "Request")
    }
    fn response_action(&self) -> String {
        action("enrol", "Response")
    }
}

/// The key the workspace is catalogued under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrolResponse {
    pub workspace: String,
}

impl Message for EnrolResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.empty("enrolResponse", &[("xmlns", VWS), ("workspace", &self.workspace)]);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "enrolResponse")?;
        let workspace = e.attr("", "workspace").ok_or_else(|| err("enrolResponse without workspace".into()))?.to_string();
        Ok(EnrolResponse { workspace })
    }
}

/// `withdraw`: the workspace is gone from the Manager host that enrolled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdraw {
    pub target: Option<Target>,
}

impl Message for Withdraw {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("withdraw", &[("xmlns", VWS)]);
        if let Some(t) = &self.target {
            t.encode(w);
        }
        w.end("withdraw");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "withdraw")?;
        Ok(Withdraw { target: Target::decode(e)? })
    }
}

impl Request for Withdraw {
    type Response = WithdrawResponse;
    fn action(&self) -> String {
        action("withdraw", "Request")
    }
    fn response_action(&self) -> String {
        action("withdraw", "Response")
    }
}

/// Whether the workspace was in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawResponse {
    pub removed: bool,
}

impl Message for WithdrawResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.empty("withdrawResponse", &[("xmlns", VWS), ("removed", if self.removed { "true" } else { "false" })]);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "withdrawResponse")?;
        Ok(WithdrawResponse { removed: e.attr("", "removed") == Some("true") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<M: Message + std::fmt::Debug>(m: &M) -> M {
        let xml = m.to_xml();
        let e = crate::soap::xml::parse(&xml, &Default::default()).unwrap();
        M::decode(&e).unwrap_or_else(|e| panic!("{xml}: {e}"))
    }

    #[test]
    fn lock_messages_round_trip_with_escaping() {
        let mut r = LockRequest::new(LockOp::Checkout, "k<&\"é");
        r.manager = Some("https://h:8443/wsrf/services/WorkspaceService?a=1&b=<2>".into());
        r.lease_secs = Some(60);
        r.holder = Some("/O=Grid/CN=Jürgen \"<&>\"".into());
        assert_eq!(round(&r), r);
        let l = LockInfo {
            workspace: "k&".into(),
            holder: "/CN=a<b".into(),
            manager: "m\"".into(),
            since: "2026-12-02T10:00:00.000Z".into(),
            until: "2026-12-02T10:10:00.000Z".into(),
        };
        for op in LockOp::ALL {
            let resp = LockResponse { op, lock: Some(l.clone()) };
            assert_eq!(round(&resp), resp);
        }
        assert_eq!(round(&LockResponse { op: LockOp::Release, lock: None }).lock, None);
    }

    #[test]
    fn enrol_and_withdraw_round_trip() {
        let d = crate::soap::xml::parse(
            &format!("<virtualWorkspace xmlns=\"{VWS}\"><state>Prepared</state></virtualWorkspace>"),
            &Default::default(),
        )
        .unwrap();
        let epr = Epr::with_key("http://b:1/wsrf/services/WorkspaceService", QName::new(VWS, "WorkspaceKey"), "k&1");
        let m = Enrol { epr: epr.clone(), owner: "/CN=ö<".into(), state: "Unstaged".into(), termination: None, description: d };
        let back = round(&m);
        assert_eq!((back.epr, back.owner, back.state), (epr, m.owner.clone(), m.state.clone()));
        assert_eq!(back.description.child(VWS, "state").unwrap().text(), "Prepared");
        assert_eq!(round(&EnrolResponse { workspace: "k".into() }).workspace, "k");
        let w = Withdraw { target: Some(Target::Key("k<".into())) };
        assert_eq!(round(&w), w);
        assert!(round(&WithdrawResponse { removed: true }).removed);
    }

    use crate::soap::xml::QName;
}
