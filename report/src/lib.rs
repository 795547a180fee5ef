//! How every part of Gantry tells an error on one line: the error, then each cause, as
//! `outer: cause: cause`. Log lines, console lines and the CLIs' `error:` lines all use
//! [`error_chain`], so an operator reads the same shape everywhere.

use std::error::Error;

/// An error and its causes on one line, `outer: cause: cause`, leaving out a cause whose
/// text the line already holds: many of our errors put their source in their own message
/// (so that a plain `Display` tells the whole story), and some libraries' messages hide
/// their cause (reqwest's), so both kinds read whole and nothing is said twice.
pub fn error_chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    use std::fmt;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn names_every_cause_once() {
        let inner = E("connection refused", None);
        let middle = E("fetch http://x/channel", Some(Box::new(inner)));
        let outer = E("update check", Some(Box::new(middle)));
        assert_eq!(
            error_chain(&outer),
            "update check: fetch http://x/channel: connection refused"
        );
        let said = E(
            "read config.toml: permission denied",
            Some(Box::new(E("permission denied", None))),
        );
        assert_eq!(error_chain(&said), "read config.toml: permission denied");
    }
}
