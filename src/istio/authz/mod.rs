//! Istio's security policy at the gateway, as istiod programs it: AuthorizationPolicy
//! into Envoy's RBAC HTTP filters (pilot/pkg/security/authz/builder/builder.go,
//! model/model.go, model/generator.go, matcher/), evaluated by the simulation as
//! Envoy's RBAC filter does.

/// The Envoy filter that answered a request itself, refusing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedBy {
    /// envoy.filters.http.rbac: 403 `RBAC: access denied`.
    Rbac,
    /// envoy.filters.http.jwt_authn: 401 (`Jwt is missing`, `Jwt verification fails`).
    Jwt,
}

/// What the gateway's security filters decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// None: the filters let the request through.
    pub denied_by: Option<DeniedBy>,
    /// The Envoy policy that decided (`ns[istio-ingress]-policy[deny-admin]-rule[0]`):
    /// the DENY rule that matched, the ALLOW rule that let the request in; None when
    /// no policy matched (an ALLOW filter with no match denies).
    pub policy: Option<String>,
    /// The decision in words, for the decision path.
    pub why: String,
}
