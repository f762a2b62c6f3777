//! Shard connection URLs. A password may sit in a URL; it must never be printed, written into a
//! plan or the catalog, or logged. So the only way to see the raw URL is `resolve()`, used when a
//! connection is made, and everything else (Display, Debug, Serialize) shows the redacted form.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ident::Dialect;

pub const REDACTED: &str = "REDACTED";

#[derive(Clone, PartialEq, Eq)]
pub struct ShardUrl(String);

const SCHEMES: &[(&str, Dialect)] = &[
    ("sqlite:", Dialect::Sqlite),
    ("postgres://", Dialect::Postgres),
    ("postgresql://", Dialect::Postgres),
    ("mysql://", Dialect::Mysql),
    ("mariadb://", Dialect::Mysql),
];

impl ShardUrl {
    pub fn parse(s: &str) -> Result<ShardUrl, String> {
        if let Some(name) = s.strip_prefix("env:") {
            let ok = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            return if ok {
                Ok(ShardUrl(s.to_string()))
            } else {
                Err(format!(
                    "{s:?}: env: must be followed by an environment variable name"
                ))
            };
        }
        if dialect_of(s).is_none() {
            return Err(format!(
                "{:?} is not a sqlite:, postgres://, mysql:// or env:NAME URL",
                redact(s)
            ));
        }
        Ok(ShardUrl(s.to_string()))
    }

    /// The form that may be shown or stored.
    pub fn redacted(&self) -> ShardUrl {
        ShardUrl(redact(&self.0))
    }

    pub fn env_name(&self) -> Option<&str> {
        self.0.strip_prefix("env:")
    }

    /// The dialect, when it can be told without reading the environment.
    pub fn dialect(&self) -> Option<Dialect> {
        dialect_of(&self.0)
    }

    /// The URL to connect with. `RESHARD_SHARD_<NAME>_URL` overrides what the map says, so that
    /// a plan (which holds redacted URLs) can be applied with credentials from the environment.
    /// Errors never contain the URL itself.
    pub fn resolve(&self, shard: &str) -> Result<String, String> {
        let override_var = format!(
            "RESHARD_SHARD_{}_URL",
            shard.to_ascii_uppercase().replace('-', "_")
        );
        if let Ok(v) = std::env::var(&override_var) {
            return Ok(v);
        }
        let url = match self.env_name() {
            Some(name) => std::env::var(name)
                .map_err(|_| format!("shard {shard}: environment variable {name} is not set"))?,
            None => self.0.clone(),
        };
        if url.contains(&format!(":{REDACTED}@")) || url.contains(&format!("={REDACTED}")) {
            return Err(format!(
                "shard {shard}: the URL's password was redacted (plans never hold one); \
                 set {override_var} or give the shard as env:NAME in the map"
            ));
        }
        if dialect_of(&url).is_none() {
            return Err(format!(
                "shard {shard}: {:?} is not a sqlite:, postgres:// or mysql:// URL",
                redact(&url)
            ));
        }
        Ok(url)
    }

    /// The URL [`ShardUrl::resolve`] connects with, redacted, and where it came from when not
    /// from the map itself: what an error about the connection names.
    pub fn shown(&self, shard: &str) -> String {
        let override_var = format!(
            "RESHARD_SHARD_{}_URL",
            shard.to_ascii_uppercase().replace('-', "_")
        );
        if let Ok(v) = std::env::var(&override_var) {
            return format!("{} from {override_var}", redact(&v));
        }
        match self.env_name().map(|n| (n, std::env::var(n))) {
            Some((name, Ok(v))) => format!("{} from {name}", redact(&v)),
            _ => redact(&self.0),
        }
    }

    /// For tests and the demo, which build maps in code.
    pub fn raw_for_tests(&self) -> &str {
        &self.0
    }
}

pub fn dialect_of(url: &str) -> Option<Dialect> {
    SCHEMES
        .iter()
        .find(|(p, _)| url.starts_with(p))
        .map(|(_, d)| *d)
}

/// Replaces the password in `scheme://user:password@host` and in `password=`-like query
/// parameters.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map(|i| rest_start + i)
            .unwrap_or(out.len());
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, REDACTED);
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _))
                    if ["password", "pwd", "passwd", "sslpassword"]
                        .contains(&k.to_ascii_lowercase().as_str()) =>
                {
                    format!("{k}={REDACTED}")
                }
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

impl fmt::Display for ShardUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for ShardUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardUrl({:?})", redact(&self.0))
    }
}

impl Serialize for ShardUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact(&self.0))
    }
}

impl<'de> Deserialize<'de> for ShardUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ShardUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_everywhere() {
        let u = ShardUrl::parse("postgres://app:s3cret@db:5432/app?sslmode=require&password=x")
            .unwrap();
        for shown in [
            u.to_string(),
            format!("{u:?}"),
            serde_json::to_string(&u).unwrap(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("app:REDACTED@db"), "{shown}");
            assert!(shown.contains("password=REDACTED"), "{shown}");
        }
    }

    #[test]
    fn no_password_no_change() {
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact("sqlite://data/s0.db"), "sqlite://data/s0.db");
        assert_eq!(redact("mysql://root@h/a@b"), "mysql://root@h/a@b");
    }

    #[test]
    fn redacted_url_does_not_connect() {
        let u = ShardUrl::parse("postgres://app:REDACTED@db/app").unwrap();
        let e = u.resolve("zz-test-shard").unwrap_err();
        assert!(e.contains("RESHARD_SHARD_ZZ_TEST_SHARD_URL"), "{e}");
    }

    #[test]
    fn bad_schemes_and_env_names() {
        assert!(ShardUrl::parse("http://x").is_err());
        assert!(ShardUrl::parse("env:").is_err());
        assert!(ShardUrl::parse("env:SHARD2_URL").is_ok());
        let e = ShardUrl::parse("oracle://u:pw@h").unwrap_err();
        assert!(!e.contains("pw@"), "{e}");
    }
}
