//! Workspaces as the seed defines them: the description model, the life-cycle state machine and
//! the site's admission policy, and the messages of the workspace port types (`messages.rs`:
//! the factory's create and the Manager's operations as Body payloads; `repo_messages.rs`: the
//! Repository's lock and enrol operations one vwsd sends another). Knows nothing of SOAP
//! envelopes, transports or storage.

pub mod description;
pub mod messages;
pub mod policy;
pub mod repo_messages;
pub mod state;

pub use description::{Description, DescriptionError};
pub use policy::{Policy, Rejection};
pub use state::{Event, State};
