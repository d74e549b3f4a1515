//! The kind target: a kind cluster with a chosen Istio version.

pub mod tools;
