//! Workspaces as the seed defines them: the description model, the life-cycle state machine and
//! the site's admission policy. Knows nothing of SOAP or storage.

pub mod description;
pub mod policy;
pub mod state;

pub use description::{Description, DescriptionError};
pub use policy::{Policy, Rejection};
pub use state::{Event, State};
