//! This host's engine, below the port types: what the Manager does to the machine it runs on.
//! Hypervisor drivers sit behind one trait ([`vmm::Vmm`]), one file per driver (`qemu.rs`); the
//! VM engine ([`vm::VmEngine`]: overlays, addresses, credentials, config disk, every VM
//! operation) and the host CA ([`ca::HostCa`]) live here too. Nothing here knows SOAP.

pub mod ca;
pub mod qemu;
pub mod vm;
pub mod vmm;
