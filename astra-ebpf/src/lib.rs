//! Keeps cargo from ignoring this crate as a build-dependency of astra-user, which only
//! declares it so its source changes trigger a rebuild of the eBPF object.
#![no_std]
