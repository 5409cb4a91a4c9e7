//! `rooms.auth`: who may open a hosted socket — nobody checked (`none`), a signed token (`jwt`)
//! or an HTTP endpoint asked like nginx's `auth_request` (`forward`). Checked at load time so a
//! key that cannot verify anything, or an option the mode ignores, is refused by `check`; the
//! key is parsed here, once. Used by `crate::auth`, which checks a handshake against it.

use super::rooms::http_url;
use super::units::ConfDuration;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// `auth = { … }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `none`, `jwt` or `forward`.
    pub mode: String,
    // jwt
    pub secret: Option<String>,
    pub public_key: Option<PathBuf>,
    pub algorithm: Option<String>,
    pub query: Option<String>,
    pub cookie: Option<String>,
    pub audience: Option<OneOrMany>,
    pub issuer: Option<OneOrMany>,
    /// push routes only: the claim naming the user (default `sub`).
    pub claim: Option<String>,
    // forward
    pub url: Option<String>,
    pub timeout: Option<ConfDuration>,
}

/// A string or a list of strings: `audience = "collab"` or `audience = ["collab", "docs"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        match Either::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a string or a list of strings"))?
        {
            Either::One(s) => Ok(OneOrMany(vec![s])),
            Either::Many(v) => Ok(OneOrMany(v)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAuth {
    None,
    Jwt(JwtAuth),
    Forward(ForwardAuth),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuth {
    pub key: JwtKey,
    /// Query parameter holding the token (y-websocket's `params`; default `token`).
    pub query: String,
    /// Cookie holding the token, if any.
    pub cookie: Option<String>,
    /// Accepted `aud` values. Not empty: a token must carry one of them (401 otherwise), so a
    /// token minted for another service with the same key is refused. Empty: `aud` is ignored.
    pub audience: Vec<String>,
    /// Accepted `iss` values, like `audience`: not empty, the token's `iss` must be one of them.
    pub issuer: Vec<String>,
    /// The claim naming the user, on a push route (default `sub`; rooms routes do not use it).
    pub claim: String,
}

/// The key tokens are verified with: an HS256 shared secret, or a PEM public key
/// (RS256/RS384/RS512/PS*/ES256/ES384/EdDSA) read at load time. Parsed once, here: a handshake
/// only verifies.
#[derive(Clone)]
pub struct JwtKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl JwtKey {
    /// An HS256 shared secret.
    pub fn secret(secret: &[u8]) -> JwtKey {
        JwtKey {
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        }
    }

    /// A public key in PEM for `algorithm` (one of [`JWT_PUBLIC_ALGS`]).
    pub fn public(algorithm: &str, pem: &[u8]) -> Result<JwtKey, String> {
        let alg = Algorithm::from_str(algorithm).map_err(|e| e.to_string())?;
        let key = match algorithm {
            a if a.starts_with("RS") || a.starts_with("PS") => DecodingKey::from_rsa_pem(pem),
            a if a.starts_with("ES") => DecodingKey::from_ec_pem(pem),
            _ => DecodingKey::from_ed_pem(pem),
        }
        .map_err(|e| format!("not a {algorithm} public key in PEM: {e}"))?;
        Ok(JwtKey {
            algorithm: alg,
            key,
        })
    }
}

/// Never the key material (a secret must not reach a log).
impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The same algorithm and key material.
impl PartialEq for JwtKey {
    fn eq(&self, other: &JwtKey) -> bool {
        use jsonwebtoken::DecodingKeyKind::{RsaModulusExponent, SecretOrDer};
        self.algorithm == other.algorithm
            && match (self.key.kind(), other.key.kind()) {
                (SecretOrDer(a), SecretOrDer(b)) => a == b,
                (RsaModulusExponent { n, e }, RsaModulusExponent { n: n2, e: e2 }) => {
                    n == n2 && e == e2
                }
                _ => false,
            }
    }
}

impl Eq for JwtKey {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// `http://host:port/path` asked with the upgrade request's headers (like `auth_request`).
    pub url: http::Uri,
    pub timeout: Duration,
}

pub const JWT_PUBLIC_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// A problem: (field below `route[i].rooms`, reason).
type Bad = (String, String);

pub fn validate(a: &RawAuth) -> Result<RoomAuth, Bad> {
    let only = |allowed: &[&str]| -> Result<(), Bad> {
        let set = [
            ("secret", a.secret.is_some()),
            ("public_key", a.public_key.is_some()),
            ("algorithm", a.algorithm.is_some()),
            ("query", a.query.is_some()),
            ("cookie", a.cookie.is_some()),
            ("audience", a.audience.is_some()),
            ("issuer", a.issuer.is_some()),
            ("claim", a.claim.is_some()),
            ("url", a.url.is_some()),
            ("timeout", a.timeout.is_some()),
        ];
        match set.iter().find(|(k, on)| *on && !allowed.contains(k)) {
            Some((k, _)) => Err((
                format!("auth.{k}"),
                format!("not used with mode = {:?}", a.mode),
            )),
            None => Ok(()),
        }
    };
    match a.mode.as_str() {
        "none" => {
            only(&[])?;
            Ok(RoomAuth::None)
        }
        "jwt" => {
            only(&[
                "secret",
                "public_key",
                "algorithm",
                "query",
                "cookie",
                "audience",
                "issuer",
                "claim",
            ])?;
            let key = jwt_key(a)?;
            let query = a.query.clone().unwrap_or_else(|| "token".into());
            if query.is_empty() {
                return Err(("auth.query".into(), "must not be empty".into()));
            }
            Ok(RoomAuth::Jwt(JwtAuth {
                key,
                query,
                cookie: a.cookie.clone().filter(|c| !c.is_empty()),
                audience: claim_values("auth.audience", a.audience.as_ref())?,
                issuer: claim_values("auth.issuer", a.issuer.as_ref())?,
                claim: match a.claim.as_deref() {
                    None => "sub".into(),
                    Some("") => return Err(("auth.claim".into(), "must not be empty".into())),
                    Some(c) => c.into(),
                },
            }))
        }
        "forward" => {
            only(&["url", "timeout"])?;
            let url = a.url.as_deref().ok_or((
                "auth.url".to_string(),
                "mode = \"forward\" needs the URL of the auth endpoint".to_string(),
            ))?;
            let timeout = a.timeout.map_or(Duration::from_secs(5), |d| d.0);
            if !(Duration::from_millis(100)..=Duration::from_secs(30)).contains(&timeout) {
                return Err((
                    "auth.timeout".into(),
                    "must be between 100ms and 30s (a connection waits for it)".into(),
                ));
            }
            Ok(RoomAuth::Forward(ForwardAuth {
                url: http_url("auth.url", url)?,
                timeout,
            }))
        }
        other => Err((
            "auth.mode".into(),
            format!("{other:?}: expected \"none\", \"jwt\" or \"forward\""),
        )),
    }
}

fn jwt_key(a: &RawAuth) -> Result<JwtKey, Bad> {
    match (&a.secret, &a.public_key) {
        (Some(s), None) => {
            if s.len() < 32 {
                return Err((
                    "auth.secret".into(),
                    "an HS256 secret needs at least 32 bytes".into(),
                ));
            }
            if a.algorithm.as_deref().is_some_and(|alg| alg != "HS256") {
                return Err((
                    "auth.algorithm".into(),
                    "a secret means HS256; use public_key for other algorithms".into(),
                ));
            }
            Ok(JwtKey::secret(s.as_bytes()))
        }
        (None, Some(path)) => {
            let algorithm = a.algorithm.clone().unwrap_or_else(|| "RS256".into());
            if !JWT_PUBLIC_ALGS.contains(&algorithm.as_str()) {
                return Err((
                    "auth.algorithm".into(),
                    format!("{algorithm:?}: expected one of {JWT_PUBLIC_ALGS:?}"),
                ));
            }
            let pem = std::fs::read(path).map_err(|e| {
                (
                    "auth.public_key".to_string(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            JwtKey::public(&algorithm, &pem).map_err(|why| {
                (
                    "auth.public_key".to_string(),
                    format!("{}: {why}", path.display()),
                )
            })
        }
        _ => Err((
            "auth".into(),
            "mode = \"jwt\" needs exactly one of secret (HS256) or public_key".into(),
        )),
    }
}

/// `audience` / `issuer`: left out means "not checked"; written, it must name something (an
/// empty list would refuse every token, an empty string matches no real claim).
fn claim_values(field: &str, v: Option<&OneOrMany>) -> Result<Vec<String>, Bad> {
    let Some(OneOrMany(values)) = v else {
        return Ok(Vec::new());
    };
    if values.is_empty() {
        return Err((
            field.into(),
            "must not be an empty list: leave it out to accept any value".into(),
        ));
    }
    if values.iter().any(|s| s.is_empty()) {
        return Err((field.into(), "values must not be empty strings".into()));
    }
    Ok(values.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(extra: &str) -> Result<RoomAuth, Bad> {
        let raw: RawAuth = toml::from_str(&format!(
            "mode = \"jwt\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n{extra}"
        ))
        .map_err(|e| ("(toml)".to_string(), e.message().to_string()))?;
        validate(&raw)
    }

    fn claims(a: RoomAuth) -> (Vec<String>, Vec<String>) {
        match a {
            RoomAuth::Jwt(j) => (j.audience, j.issuer),
            other => panic!("a jwt auth, got {other:?}"),
        }
    }

    #[test]
    fn audience_and_issuer_take_a_string_or_a_list() {
        assert_eq!(
            claims(jwt("").unwrap()),
            (vec![], vec![]),
            "unset: not checked"
        );
        assert_eq!(
            claims(jwt("audience = \"collab\"\nissuer = [\"a\", \"b\"]").unwrap()),
            (vec!["collab".into()], vec!["a".into(), "b".into()])
        );
        let e = jwt("audience = []").unwrap_err();
        assert_eq!(e.0, "auth.audience");
        assert!(e.1.contains("empty list"), "{e:?}");
        assert_eq!(jwt("issuer = \"\"").unwrap_err().0, "auth.issuer");
        let e = jwt("issuer = 5").unwrap_err();
        assert!(e.1.contains("a string or a list of strings"), "{e:?}");
        let forward: RawAuth = toml::from_str(
            "mode = \"forward\"\nurl = \"http://127.0.0.1:9/\"\naudience = \"collab\"",
        )
        .unwrap();
        let e = validate(&forward).unwrap_err();
        assert_eq!(e.0, "auth.audience");
        assert!(e.1.contains("not used"), "{e:?}");
    }
}
