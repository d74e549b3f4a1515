//! The top-level error and the documented exit codes.
//!
//! Every module has its own error enum at its boundary; they all fold into [`Error`],
//! whose [`Error::exit_code`] tells a bad input from a broken environment.

/// Exit codes, documented in README.md.
pub mod exit {
    /// Every selected check passed.
    pub const OK: u8 = 0;
    /// At least one check (or static finding of severity error) failed.
    pub const CHECK_FAILED: u8 = 1;
    /// Bad input or usage: unreadable or malformed fixtures or suite, bad flags.
    pub const BAD_INPUT: u8 = 2;
    /// The environment failed: Envoy could not be provisioned or started, a target
    /// is unavailable, a process died during bring-up.
    pub const ENVIRONMENT: u8 = 3;
    /// Interrupted by Ctrl-C / SIGTERM (after cleaning up).
    pub const INTERRUPTED: u8 = 130;
}

/// Everything that can stop a run before or around the checks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Fixtures(#[from] crate::fixtures::LoadError),
    #[error(transparent)]
    Suite(#[from] crate::suite::SuiteError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Target(#[from] crate::targets::TargetError),
    #[error(transparent)]
    Oracle(#[from] crate::oracle::OracleError),
    #[error(transparent)]
    Compare(#[from] crate::report::compare::CompareError),
    #[error("failed to write JUnit report to {path}")]
    Junit {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Fixtures(_) | Error::Suite(_) | Error::Usage(_) => exit::BAD_INPUT,
            Error::Target(e) if e.is_bad_input() => exit::BAD_INPUT,
            Error::Oracle(e) if e.is_bad_input() => exit::BAD_INPUT,
            Error::Compare(e) if e.is_bad_input() => exit::BAD_INPUT,
            Error::Target(_) | Error::Junit { .. } | Error::Oracle(_) | Error::Compare(_) => {
                exit::ENVIRONMENT
            }
        }
    }
}

/// Prints an error with its chain of causes, the way a user should read it.
pub fn report(e: &(dyn std::error::Error + 'static)) {
    let mut msg = format!("error: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!("\n  caused by: {s}"));
        src = s.source();
    }
    eprintln!("{msg}");
}
