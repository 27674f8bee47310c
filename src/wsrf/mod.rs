//! The WSRF layer: resource homes, resource properties, lifetime and base faults, generic over
//! what the resources are. Services compose these operations; nothing here knows about VMs.

pub mod faults;
pub mod home;
pub mod intern;
pub mod lifetime;
pub mod messages;
pub mod notification;
pub mod notify_messages;
pub mod properties;
pub mod sweeper;
/// xsd:dateTime helpers live with the wire vocabulary; kept here under their old path.
pub use crate::soap::time;
pub mod query;
pub mod xpath;

pub use faults::{BaseFault, FaultType};
pub use home::{Home, Owner, PropertyDecl, ResourceState, ResourceType};
pub use lifetime::LifetimePolicy;
pub use properties::Access;
pub use sweeper::Sweeper;
