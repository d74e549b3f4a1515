//! `meshcheck upgrade`: the suite before, during (new control plane, old proxies) and
//! after an Istio upgrade, under steady traffic, in one report.

pub mod cluster;
pub mod transition;
