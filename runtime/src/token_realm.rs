//! Which bearer token realms may receive a registry's credentials.
//!
//! A registry's `WWW-Authenticate: Bearer realm=…` challenge names the token service, and
//! the client sends the registry's username and password there. The registry (or whoever
//! answers in its name) chooses that URL, so the credentials go only to a realm on the
//! registry's own host (any port: a token service beside the registry is common) or on a
//! host listed for that registry; Docker Hub's `auth.docker.io` is built in. Any other
//! realm is asked for an anonymous token.

use crate::reference::DEFAULT_REGISTRY;

/// Realm hosts trusted with a registry's credentials without being listed, by registry
/// (as references name it).
pub const BUILTIN_TOKEN_REALMS: &[(&str, &[&str])] = &[(DEFAULT_REGISTRY, &["auth.docker.io"])];

/// A host (lower case, an IPv6 address without brackets) and, if it was given, a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RealmHost {
    host: String,
    port: Option<u16>,
}

impl RealmHost {
    /// `host`, `host:port`, `[v6]` or `[v6]:port`; a port that is not a number is taken as
    /// part of the host, which then matches nothing a URL can name.
    fn parse(s: &str) -> Self {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, tail)) => (h, tail.strip_prefix(':')),
                None => (rest, None),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (s, None),
            }
        };
        match port.map(str::parse::<u16>) {
            Some(Ok(port)) => Self {
                host: host.to_ascii_lowercase(),
                port: Some(port),
            },
            Some(Err(_)) => Self {
                host: s.to_ascii_lowercase(),
                port: None,
            },
            None => Self {
                host: host.to_ascii_lowercase(),
                port: None,
            },
        }
    }

    fn matches(&self, url: &reqwest::Url) -> bool {
        let host = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'));
        host.is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && self
                .port
                .is_none_or(|p| url.port_or_known_default() == Some(p))
    }
}

/// The realm hosts that may receive one registry's credentials.
#[derive(Debug, Clone)]
pub struct RealmPolicy {
    allowed: Vec<RealmHost>,
}

impl RealmPolicy {
    /// For `registry` (as references name it) served from `api_host` (`host[:port]`), with
    /// the realm hosts `listed` for it.
    pub fn new(registry: &str, api_host: &str, listed: &[String]) -> Self {
        let own = RealmHost {
            port: None,
            ..RealmHost::parse(api_host)
        };
        let builtin = BUILTIN_TOKEN_REALMS
            .iter()
            .filter(|(r, _)| *r == registry)
            .flat_map(|(_, hosts)| hosts.iter().copied());
        let listed = listed.iter().map(String::as_str);
        Self {
            allowed: std::iter::once(own)
                .chain(builtin.chain(listed).map(RealmHost::parse))
                .collect(),
        }
    }

    /// Whether the realm at `url` may receive the registry's credentials.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        self.allowed.iter().any(|h| h.matches(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(policy: &RealmPolicy, url: &str) -> bool {
        policy.allows(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn the_registrys_own_host_is_allowed_on_any_port() {
        let p = RealmPolicy::new("127.0.0.1:5000", "127.0.0.1:5000", &[]);
        assert!(allows(&p, "http://127.0.0.1:5001/token"));
        assert!(allows(&p, "https://127.0.0.1/token"));
        assert!(!allows(&p, "http://127.0.0.2:5000/token"));
        assert!(!allows(&p, "http://localhost:5000/token"));
        let p = RealmPolicy::new("Registry.Example.net", "Registry.Example.net", &[]);
        assert!(allows(&p, "https://registry.example.net/token"));
        assert!(!allows(&p, "https://auth.example.net/token"));
        assert!(!allows(&p, "https://registry.example.net.evil.test/token"));
    }

    #[test]
    fn docker_hub_trusts_auth_docker_io_and_nothing_else() {
        let p = RealmPolicy::new("docker.io", "registry-1.docker.io", &[]);
        assert!(allows(&p, "https://auth.docker.io/token"));
        assert!(allows(&p, "https://registry-1.docker.io/token"));
        assert!(!allows(&p, "https://auth.docker.io.evil.test/token"));
        assert!(!allows(&p, "https://docker.io.evil.test/token"));
        let other = RealmPolicy::new("ghcr.io", "ghcr.io", &[]);
        assert!(!allows(&other, "https://auth.docker.io/token"));
    }

    #[test]
    fn listed_hosts_are_allowed_on_the_port_given_or_any() {
        let listed = [
            "auth.example.net".to_owned(),
            "tokens.example.net:8443".to_owned(),
            "[::1]:9000".to_owned(),
        ];
        let p = RealmPolicy::new("registry.example.net", "registry.example.net", &listed);
        assert!(allows(&p, "https://auth.example.net/token"));
        assert!(allows(&p, "https://AUTH.example.net:444/token"));
        assert!(allows(&p, "https://tokens.example.net:8443/token"));
        assert!(!allows(&p, "https://tokens.example.net/token"));
        assert!(allows(&p, "http://[::1]:9000/token"));
        assert!(!allows(&p, "http://[::1]:9001/token"));
        assert!(!allows(&p, "https://example.net/token"));
    }

    #[test]
    fn host_entries_parse_with_and_without_ports() {
        let h = |s| RealmHost::parse(s);
        assert_eq!(
            h("Auth.Example.net"),
            RealmHost {
                host: "auth.example.net".into(),
                port: None
            }
        );
        assert_eq!(
            h("[::1]:5000"),
            RealmHost {
                host: "::1".into(),
                port: Some(5000)
            }
        );
        assert_eq!(
            h("::1"),
            RealmHost {
                host: "::1".into(),
                port: None
            }
        );
        assert_eq!(h("host:x").port, None);
    }
}
