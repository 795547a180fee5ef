//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1) as registries send them:
//! `Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"`
//! or `Basic realm="Registry"`. Values are tokens or quoted strings with `\` escapes; a
//! header that holds several challenges is read up to the first one.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Bearer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: Scheme,
    params: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WWW-Authenticate {header:?}: {reason}")]
pub struct InvalidChallenge {
    pub header: String,
    pub reason: &'static str,
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl Challenge {
    pub fn parse(header: &str) -> Result<Self, InvalidChallenge> {
        let bad = |reason| InvalidChallenge {
            header: header.to_owned(),
            reason,
        };
        let s = header.trim_start();
        let end = s.find(|c: char| !is_tchar(c)).unwrap_or(s.len());
        let (scheme, mut rest) = s.split_at(end);
        let scheme = if scheme.eq_ignore_ascii_case("bearer") {
            Scheme::Bearer
        } else if scheme.eq_ignore_ascii_case("basic") {
            Scheme::Basic
        } else if scheme.is_empty() {
            return Err(bad("no scheme"));
        } else {
            return Err(bad("scheme is neither Basic nor Bearer"));
        };
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let end = rest.find(|c: char| !is_tchar(c)).unwrap_or(rest.len());
            let (name, after) = rest.split_at(end);
            if name.is_empty() {
                return Err(bad("expected a parameter name"));
            }
            let after = after.trim_start_matches([' ', '\t']);
            let Some(after) = after.strip_prefix('=') else {
                // A bare token: the next challenge's scheme. Stop at it.
                break;
            };
            let after = after.trim_start_matches([' ', '\t']);
            let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut close = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, e)) => value.push(e),
                            None => return Err(bad("quoted value ends in a backslash")),
                        },
                        '"' => {
                            close = Some(i);
                            break;
                        }
                        c if c.is_control() => return Err(bad("control character in a value")),
                        c => value.push(c),
                    }
                }
                let close = close.ok_or_else(|| bad("unterminated quoted value"))?;
                (value, &quoted[close + 1..])
            } else {
                let end = after
                    .find(|c: char| !is_tchar(c) && c != '/' && c != ':')
                    .unwrap_or(after.len());
                if end == 0 {
                    return Err(bad("parameter without a value"));
                }
                (after[..end].to_owned(), &after[end..])
            };
            let after = after.trim_start_matches([' ', '\t']);
            if !after.is_empty() && !after.starts_with(',') {
                return Err(bad("parameters must be separated by commas"));
            }
            if params
                .iter()
                .any(|(n, _): &(String, String)| n.eq_ignore_ascii_case(name))
            {
                return Err(bad("a parameter appears twice"));
            }
            params.push((name.to_ascii_lowercase(), value));
            rest = after;
        }
        Ok(Challenge { scheme, params })
    }

    /// A parameter by name (names are case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, Scheme::Bearer);
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(c.param("scope"), Some("repository:library/busybox:pull"));
        assert_eq!(c.param("error"), None);
    }

    #[test]
    fn scheme_and_names_are_case_insensitive_and_spacing_is_free() {
        let c = Challenge::parse(r#"  bEaReR   Realm = "r" ,  SERVICE=svc ,, "#).unwrap();
        assert_eq!(c.scheme, Scheme::Bearer);
        assert_eq!(c.param("realm"), Some("r"));
        assert_eq!(c.param("service"), Some("svc"));
        let c = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, Scheme::Basic);
        assert_eq!(c.param("REALM"), Some("Registry Realm"));
        assert_eq!(Challenge::parse("Basic").unwrap().param("realm"), None);
    }

    #[test]
    fn quoted_values_keep_commas_and_unescape() {
        let c = Challenge::parse(
            r#"Bearer realm="https://a/t",scope="repository:x/y:pull,push",error="insufficient_scope",note="say \"hi\" \\ ok""#,
        )
        .unwrap();
        assert_eq!(c.param("scope"), Some("repository:x/y:pull,push"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));
        assert_eq!(c.param("note"), Some(r#"say "hi" \ ok"#));
    }

    #[test]
    fn unquoted_values_may_hold_urls() {
        let c = Challenge::parse("Bearer realm=https://a:5001/token,service=reg").unwrap();
        assert_eq!(c.param("realm"), Some("https://a:5001/token"));
        assert_eq!(c.param("service"), Some("reg"));
    }

    #[test]
    fn stops_at_a_second_challenge() {
        let c = Challenge::parse(r#"Bearer realm="a", Basic realm="b""#).unwrap();
        assert_eq!(c.scheme, Scheme::Bearer);
        assert_eq!(c.param("realm"), Some("a"));
    }

    #[test]
    fn refuses_malformed_challenges_with_a_reason() {
        for (header, reason) in [
            ("", "no scheme"),
            ("Negotiate abc", "scheme is neither Basic nor Bearer"),
            (r#"Bearer realm="open"#, "unterminated quoted value"),
            (r#"Bearer realm="a\"#, "quoted value ends in a backslash"),
            ("Bearer realm=", "parameter without a value"),
            (
                r#"Bearer realm="a" service="b""#,
                "parameters must be separated by commas",
            ),
            (r#"Bearer realm="a",realm="b""#, "a parameter appears twice"),
            ("Bearer =x", "expected a parameter name"),
            ("Bearer realm=\"a\u{1}\"", "control character in a value"),
        ] {
            let err = Challenge::parse(header).unwrap_err();
            assert_eq!(err.reason, reason, "{header:?}");
            assert!(err.to_string().contains("WWW-Authenticate"), "{err}");
        }
    }
}
