//! This host's engine, below the port types: what the Manager does to the machine it runs on.
//! Hypervisor drivers sit behind one trait ([`vmm::Vmm`]), one file per driver; the staging job
//! and the image pool live here too. Nothing here knows SOAP.

pub mod vmm;
pub mod xl;
