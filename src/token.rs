//! A request's JWT (a suite request's `token`): the token as a string, read from a
//! file, or minted when the suite is loaded. Minted tokens are signed with Istio's own
//! sample key (the key Istio's docs mint their test tokens with, whose JWKS is what
//! `jwksUri: https://raw.githubusercontent.com/istio/istio/<branch>/security/tools/jwt/samples/jwks.json`
//! serves and what a fixture may inline as `jwks`), with a key file the suite names, or
//! with `key: wrong`, a key made for this run that no JWKS holds. So fixtures stay
//! what a cluster applies: no placeholder, no per-run key in them.
//!
//! ```yaml
//! token: eyJhbGciOi...                         # as written
//! token: { file: tokens/demo.jwt }             # relative to the suite file
//! token:                                       # minted
//!   issuer: testing@secure.istio.io
//!   subject: alice                             # default: the issuer
//!   audiences: [atlas]
//!   claims: { groups: [admins] }
//!   expires_in: -5m                            # default 1h; negative: expired
//!   key: wrong                                 # default Istio's sample key; or a PEM file
//! ```
//!
//! `key: served` signs with a key made for this run whose JWKS the local target
//! serves for every `jwksUri` meshcheck does not know (istiod would fetch it; meshcheck
//! never reaches the network): a token of the issuer of such a rule then verifies on
//! the local target and in the simulation. On a cluster istiod fetches the real JWKS,
//! which does not hold that key.
//!
//! Sent as `Authorization: Bearer <token>`, or in `header` (after `prefix`), query
//! parameter `param` or cookie `cookie`.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Istio's sample private key (istio/istio security/tools/jwt/samples/key.pem).
const ISTIO_SAMPLE_KEY: &str = include_str!("istio/authz/samples/istio-sample-key.pem");

/// A request's token and where it goes.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(try_from = "Value")]
pub struct TokenSpec {
    pub source: TokenSource,
    /// Sent in this header (default `Authorization` with prefix `Bearer `).
    pub header: Option<String>,
    /// With `header`: written before the token.
    pub prefix: Option<String>,
    /// Sent as this query parameter.
    pub param: Option<String>,
    /// Sent as this cookie.
    pub cookie: Option<String>,
    /// The token, once resolved ([`TokenSpec::resolve`], at suite load).
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum TokenSource {
    Literal(String),
    File(PathBuf),
    Mint(Mint),
    #[default]
    None,
}

/// A token minted at load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mint {
    pub issuer: String,
    pub subject: Option<String>,
    pub audiences: Vec<String>,
    /// More claims (they may also replace `iat`, `exp`, ...).
    pub claims: Map<String, Value>,
    /// `1h`, `30m`, `-5m` (expired: Envoy allows 60 s of clock skew past `exp`).
    pub expires_in: Option<String>,
    /// None: Istio's sample key; `wrong`: this run's own key, which no JWKS holds;
    /// `served`: the key of the JWKS the local target serves for unfetched
    /// `jwksUri`s; else a PEM file.
    pub key: Option<String>,
    /// The header's `kid` (Istio's sample key: its JWKS kid).
    pub kid: Option<String>,
}

const LOCATION_KEYS: [&str; 4] = ["header", "prefix", "param", "cookie"];
const MINT_KEYS: [&str; 7] = [
    "issuer",
    "subject",
    "audiences",
    "claims",
    "expires_in",
    "key",
    "kid",
];

impl TryFrom<Value> for TokenSpec {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        let m = match v {
            Value::String(s) => {
                return Ok(TokenSpec {
                    source: TokenSource::Literal(s),
                    ..Default::default()
                })
            }
            Value::Object(m) => m,
            other => return Err(format!("token: expected a string or a map, got {other}")),
        };
        for k in m.keys() {
            if !(["value", "file"].contains(&k.as_str())
                || MINT_KEYS.contains(&k.as_str())
                || LOCATION_KEYS.contains(&k.as_str()))
            {
                return Err(format!(
                    "token: unknown key `{k}` (value, file, {}, {})",
                    MINT_KEYS.join(", "),
                    LOCATION_KEYS.join(", ")
                ));
            }
        }
        let string = |k: &str| -> Result<Option<String>, String> {
            match m.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err(format!("token.{k}: expected a string, got {other}")),
            }
        };
        let minted = MINT_KEYS.iter().any(|k| m.contains_key(*k));
        let given = [m.contains_key("value"), m.contains_key("file"), minted];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(
                "token: give one of `value`, `file`, or the claims to mint (`issuer`, ...)".into(),
            );
        }
        let source = if let Some(v) = string("value")? {
            TokenSource::Literal(v)
        } else if let Some(f) = string("file")? {
            TokenSource::File(PathBuf::from(f))
        } else {
            let issuer = string("issuer")?.ok_or("token: minting needs `issuer`")?;
            let audiences = match m.get("audiences") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or("token.audiences: expected a list of strings")?,
                Some(other) => {
                    return Err(format!("token.audiences: expected a list, got {other}"))
                }
            };
            let claims = match m.get("claims") {
                None => Map::new(),
                Some(Value::Object(c)) => c.clone(),
                Some(other) => return Err(format!("token.claims: expected a map, got {other}")),
            };
            let expires_in = string("expires_in")?;
            if let Some(e) = &expires_in {
                signed_seconds(e)?;
            }
            TokenSource::Mint(Mint {
                issuer,
                subject: string("subject")?,
                audiences,
                claims,
                expires_in,
                key: string("key")?,
                kid: string("kid")?,
            })
        };
        let t = TokenSpec {
            source,
            header: string("header")?,
            prefix: string("prefix")?,
            param: string("param")?,
            cookie: string("cookie")?,
            value: String::new(),
        };
        let places = [&t.header, &t.param, &t.cookie]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if places > 1 {
            return Err("token: give at most one of `header`, `param`, `cookie`".into());
        }
        if t.prefix.is_some() && t.header.is_none() {
            return Err("token.prefix goes with `header`".into());
        }
        Ok(t)
    }
}

impl TokenSpec {
    /// Reads or mints the token (files relative to `base`, the suite's directory).
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        self.value = match &self.source {
            TokenSource::Literal(s) => s.trim().to_string(),
            TokenSource::File(f) => {
                let p = base.join(f);
                std::fs::read_to_string(&p)
                    .map_err(|e| format!("token.file {}: {e}", p.display()))?
                    .trim()
                    .to_string()
            }
            TokenSource::Mint(m) => m.mint(base, now())?,
            TokenSource::None => String::new(),
        };
        Ok(())
    }

    /// The header that carries the token (lower-case name, value), if it goes in one.
    pub fn header(&self) -> Option<(String, String)> {
        if self.param.is_some() {
            return None;
        }
        if let Some(c) = &self.cookie {
            return Some(("cookie".into(), format!("{c}={}", self.value)));
        }
        Some(match &self.header {
            Some(h) => (
                h.to_ascii_lowercase(),
                format!("{}{}", self.prefix.as_deref().unwrap_or(""), self.value),
            ),
            None => ("authorization".into(), format!("Bearer {}", self.value)),
        })
    }

    /// The query parameter that carries the token (name, value), if it goes in one.
    pub fn param(&self) -> Option<(String, String)> {
        self.param.clone().map(|p| (p, self.value.clone()))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `90s`, `30m`, `2h`, `1d`, with a leading `-` for the past.
fn signed_seconds(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("token.expires_in {s:?}: expected e.g. 1h, 30m, -5m"))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("token.expires_in {s:?}: unit s, m, h or d")),
    };
    Ok(if neg { -n * mult } else { n * mult })
}

/// The signer of a minted token: its JWS alg and key.
enum Signer {
    Rsa(signature::RsaKeyPair),
    Ecdsa(signature::EcdsaKeyPair, &'static str),
    Ed25519(signature::Ed25519KeyPair),
}

impl Signer {
    fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ecdsa(_, alg) => alg,
            Signer::Ed25519(_) => "EdDSA",
        }
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| "RSA signing failed".to_string())?;
                Ok(sig)
            }
            Signer::Ecdsa(k, _) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_string()),
            Signer::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }

    /// A private key in PEM: PKCS#1 RSA, or PKCS#8 RSA, P-256, P-384 or Ed25519.
    fn from_pem(pem: &str) -> Result<Signer, String> {
        let (label, der) = pem_der(pem).ok_or("no PEM block")?;
        let rng = SystemRandom::new();
        match label.as_str() {
            "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(&der)
                .map(Signer::Rsa)
                .map_err(|e| format!("RSA key: {e}")),
            "PRIVATE KEY" => {
                if let Ok(k) = signature::RsaKeyPair::from_pkcs8(&der) {
                    return Ok(Signer::Rsa(k));
                }
                for (alg, name) in [
                    (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "ES256"),
                    (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "ES384"),
                ] {
                    if let Ok(k) = signature::EcdsaKeyPair::from_pkcs8(alg, &der, &rng) {
                        return Ok(Signer::Ecdsa(k, name));
                    }
                }
                signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map(Signer::Ed25519)
                    .map_err(|_| "a PKCS#8 key that is not RSA, P-256, P-384 or Ed25519".into())
            }
            other => Err(format!(
                "a {other:?} PEM block: give an RSA key (PKCS#1 or PKCS#8) or a PKCS#8 EC/Ed25519 key (openssl pkcs8 -topk8 -nocrypt)"
            )),
        }
    }
}

/// The first PEM block: its label and DER.
fn pem_der(pem: &str) -> Option<(String, Vec<u8>)> {
    let begin = pem.find("-----BEGIN ")?;
    let rest = &pem[begin + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end = body.find("-----END ")?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((label, der))
}

/// A P-256 key made for this run (PKCS#8), the same every time it is asked for.
fn run_key(cell: &'static OnceLock<Vec<u8>>) -> Result<signature::EcdsaKeyPair, String> {
    let rng = SystemRandom::new();
    let der = cell.get_or_init(|| {
        signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default()
    });
    signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        .map_err(|e| format!("generating this run's key: {e}"))
}

/// This run's own key (P-256), which no JWKS holds.
fn wrong_key() -> Result<Signer, String> {
    static PKCS8: OnceLock<Vec<u8>> = OnceLock::new();
    run_key(&PKCS8).map(|k| Signer::Ecdsa(k, "ES256"))
}

/// The `kid` of [`served_jwks`]'s key.
pub const SERVED_KID: &str = "meshcheck-served";

/// The key of `key: served` tokens, made for this run: the one key of the JWKS the
/// local target serves for a `jwksUri` meshcheck does not fetch ([`served_jwks`]).
fn served_key() -> Result<signature::EcdsaKeyPair, String> {
    static PKCS8: OnceLock<Vec<u8>> = OnceLock::new();
    run_key(&PKCS8)
}

/// The JWKS the local target serves for every `jwksUri` other than Istio's sample one
/// (istiod would fetch it; meshcheck never reaches the network): this run's served key
/// (ES256, kid [`SERVED_KID`]), so `key: served` tokens verify there and nothing else
/// does. None when the key cannot be made.
pub fn served_jwks() -> Option<String> {
    use signature::KeyPair as _;
    let k = served_key().ok()?;
    // An uncompressed P-256 point: 0x04, X (32 bytes), Y (32 bytes).
    let point = k.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some(
        json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": SERVED_KID,
            "x": b64url(&point[1..33]), "y": b64url(&point[33..])}]})
        .to_string(),
    )
}

/// The `kid` of Istio's sample JWKS.
fn sample_kid() -> String {
    serde_json::from_str::<Value>(crate::istio::authz::jwt::ISTIO_SAMPLE_JWKS)
        .ok()
        .and_then(|v| {
            v.pointer("/keys/0/kid")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Mint {
    /// The signed token, issued at `now`.
    pub fn mint(&self, base: &Path, now: u64) -> Result<String, String> {
        let (signer, default_kid) = match self.key.as_deref() {
            None => (
                Signer::from_pem(ISTIO_SAMPLE_KEY)
                    .map_err(|e| format!("Istio's sample key: {e}"))?,
                Some(sample_kid()),
            ),
            Some("wrong") => (wrong_key()?, None),
            Some("served") => (
                Signer::Ecdsa(served_key()?, "ES256"),
                Some(SERVED_KID.to_string()),
            ),
            Some(path) => {
                let p = base.join(path);
                let pem = std::fs::read_to_string(&p)
                    .map_err(|e| format!("token.key {}: {e}", p.display()))?;
                (
                    Signer::from_pem(&pem)
                        .map_err(|e| format!("token.key {}: {e}", p.display()))?,
                    None,
                )
            }
        };
        let mut header = json!({"alg": signer.alg(), "typ": "JWT"});
        if let Some(kid) = self.kid.clone().or(default_kid) {
            header["kid"] = json!(kid);
        }
        let life = signed_seconds(self.expires_in.as_deref().unwrap_or("1h"))?;
        // exp 0 would mean "no exp" to Envoy: an expired token stays in the past.
        let exp = (now as i64 + life).max(1);
        let mut payload = Map::new();
        payload.insert("iss".into(), json!(self.issuer));
        payload.insert(
            "sub".into(),
            json!(self.subject.clone().unwrap_or_else(|| self.issuer.clone())),
        );
        match self.audiences.as_slice() {
            [] => {}
            [one] => {
                payload.insert("aud".into(), json!(one));
            }
            many => {
                payload.insert("aud".into(), json!(many));
            }
        }
        payload.insert("iat".into(), json!(now));
        payload.insert("exp".into(), json!(exp));
        for (k, v) in &self.claims {
            payload.insert(k.clone(), v.clone());
        }
        let signed = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(Value::Object(payload).to_string().as_bytes())
        );
        let sig = signer.sign(signed.as_bytes())?;
        Ok(format!("{signed}.{}", b64url(&sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::authz::jwt::{Jwks, Jwt, ISTIO_SAMPLE_JWKS};

    fn spec(yaml: Value) -> Result<TokenSpec, String> {
        TokenSpec::try_from(yaml)
    }

    #[test]
    fn forms_and_places() {
        let t = spec(json!("abc")).unwrap();
        assert_eq!(t.source, TokenSource::Literal("abc".into()));
        assert!(spec(json!({"issuer": "i", "file": "f"})).is_err());
        assert!(spec(json!({"isuer": "i"}))
            .unwrap_err()
            .contains("unknown key `isuer`"));
        assert!(spec(json!({"issuer": "i", "header": "x", "param": "p"})).is_err());
        assert!(spec(json!({"issuer": "i", "prefix": "p"})).is_err());
        assert!(spec(json!({"issuer": "i", "expires_in": "soon"})).is_err());
        let mut t = spec(json!({"value": "t", "header": "X-Jwt", "prefix": "Token "})).unwrap();
        t.resolve(Path::new(".")).unwrap();
        assert_eq!(t.header(), Some(("x-jwt".into(), "Token t".into())));
        let mut t = spec(json!({"value": "t", "cookie": "session"})).unwrap();
        t.resolve(Path::new(".")).unwrap();
        assert_eq!(t.header(), Some(("cookie".into(), "session=t".into())));
        let mut t = spec(json!({"value": "t", "param": "tok"})).unwrap();
        t.resolve(Path::new(".")).unwrap();
        assert_eq!(
            (t.header(), t.param()),
            (None, Some(("tok".into(), "t".into())))
        );
        assert_eq!(signed_seconds("-5m"), Ok(-300));
        assert_eq!(signed_seconds("2h"), Ok(7200));
    }

    #[test]
    fn minted_tokens_verify_with_istios_sample_jwks_and_the_wrong_key_does_not() {
        let jwks = Jwks::parse(ISTIO_SAMPLE_JWKS).unwrap();
        let m = Mint {
            issuer: "testing@secure.istio.io".into(),
            audiences: vec!["a".into(), "b".into()],
            claims: [("groups".to_string(), json!(["g1"]))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let t = m.mint(Path::new("."), 1_000).unwrap();
        let jwt = Jwt::parse(&t).unwrap();
        assert_eq!(jwt.exp, 1_000 + 3600);
        assert_eq!(jwt.audiences, ["a", "b"]);
        assert_eq!(jwt.payload["sub"], "testing@secure.istio.io");
        assert_eq!(jwt.payload["groups"], json!(["g1"]));
        assert_eq!(jwt.kid, sample_kid());
        assert!(jwks.verifies(&jwt));
        let wrong = Mint {
            key: Some("wrong".into()),
            ..m.clone()
        };
        let jwt = Jwt::parse(&wrong.mint(Path::new("."), 1_000).unwrap()).unwrap();
        assert_eq!(jwt.alg, "ES256");
        assert!(!jwks.verifies(&jwt));
        // `key: served`: the JWKS served for unfetched jwksUris holds it, and only it.
        let served_jwks = Jwks::parse(&served_jwks().unwrap()).unwrap();
        let served = Mint {
            key: Some("served".into()),
            ..m.clone()
        };
        let jwt = Jwt::parse(&served.mint(Path::new("."), 1_000).unwrap()).unwrap();
        assert_eq!(jwt.kid, SERVED_KID);
        assert!(served_jwks.verifies(&jwt));
        assert!(!jwks.verifies(&jwt));
        let jwt = Jwt::parse(&wrong.mint(Path::new("."), 1_000).unwrap()).unwrap();
        assert!(!served_jwks.verifies(&jwt));
        let jwt = Jwt::parse(&m.mint(Path::new("."), 1_000).unwrap()).unwrap();
        assert!(!served_jwks.verifies(&jwt));
        let expired = Mint {
            expires_in: Some("-5m".into()),
            ..m
        };
        assert_eq!(
            Jwt::parse(&expired.mint(Path::new("."), 1_000).unwrap())
                .unwrap()
                .exp,
            700
        );
    }
}
