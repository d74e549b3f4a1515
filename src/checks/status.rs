//! `status`: the conditions of a Gateway API object, as the target shows them: on a
//! cluster the object's own `status` (written by istiod's controller); on the local
//! target, which has no API server, the conditions meshcheck computes as istiod's
//! controller does (src/fixtures/gateway_api/status.rs, compared with istiod's own
//! by the oracle: MC407).

use super::{Ctx, Outcome};
use crate::fixtures::gateway_api::{Condition, ObjectStatus};
use crate::suite::StatusCheck;

pub async fn run(ctx: &Ctx, check: &StatusCheck) -> Outcome {
    let Some((kind, ns, name)) = check.target() else {
        return Outcome::fail(
            format!(
                "status.object {:?} is not `Kind namespace/name`",
                check.object
            ),
            "",
        );
    };
    match ctx.target.gateway_api_status(kind, ns, name).await {
        Err(e) => Outcome::fail(
            format!("cannot read the status of {}: {e}", check.object),
            "",
        ),
        Ok(None) => Outcome::fail(
            format!(
                "{} has no status: no such object, or no controller wrote one",
                check.object
            ),
            "",
        ),
        Ok(Some(status)) => match judge(&status, check) {
            Ok(seen) => Outcome::pass(seen),
            Err((why, seen)) => Outcome::fail(why, seen),
        },
    }
}

/// Whether `status` holds every expected condition of `check`: Ok(what was seen), or
/// Err((what is wrong, what was seen)).
pub fn judge(status: &ObjectStatus, check: &StatusCheck) -> Result<String, (String, String)> {
    let scoped: Vec<&Condition> = status
        .conditions
        .iter()
        .filter(|c| check.scope.is_empty() || c.scope == check.scope)
        .collect();
    let seen = scoped
        .iter()
        .map(|c| c.describe())
        .collect::<Vec<_>>()
        .join("; ");
    let mut wrong = Vec::new();
    for want in &check.conditions {
        let of_type: Vec<&&Condition> = scoped.iter().filter(|c| c.type_ == want.type_).collect();
        if of_type.is_empty() {
            wrong.push(format!("no {} condition{}", want.type_, scope_note(check)));
            continue;
        }
        for c in of_type {
            let status_ok = c.status == want.status.0;
            let reason_ok = want.reason.as_ref().is_none_or(|r| *r == c.reason);
            if !(status_ok && reason_ok) {
                let expected = format!(
                    "{}={}{}",
                    want.type_,
                    if want.status.0 { "True" } else { "False" },
                    want.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
                wrong.push(format!(
                    "expected {expected}, got {}: {}",
                    c.describe(),
                    c.message
                ));
            }
        }
    }
    if wrong.is_empty() {
        Ok(seen)
    } else {
        Err((format!("{}: {}", check.object, wrong.join("; ")), seen))
    }
}

fn scope_note(check: &StatusCheck) -> String {
    if check.scope.is_empty() {
        String::new()
    } else {
        format!(" in scope {:?}", check.scope)
    }
}
