//! `meshcheck equivalent` (migration verification): the suite's requests asked of two
//! fixture sets, OLD and NEW, on the simulation and, with `--oracle`, on istiod's
//! own config; every request whose answers differ (status, backend and shares, path,
//! query and headers the backend receives, response headers, redirect Location,
//! direct response body, fault delay, mirrors) is reported with both decision paths.

mod answers;
mod command;
mod compare;
mod model;
mod oracle;
mod report;

pub use answers::{Answers, Fact};
pub use command::{command, EquivalentArgs};
