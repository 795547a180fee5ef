//! Compares a kernel `.config` with Gantry's requirements.

use std::collections::HashMap;
use std::fmt;

use crate::fragments::{parse_config_line, Requirement, Want};

/// What a kernel config does wrong about one requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The option is not in the config at all, or is not set where it must be.
    Missing,
    /// The option is a module; Gantry loads no modules.
    Module,
    /// The option is set to something else.
    Wrong { found: String },
}

/// One requirement a config fails, with what the config says instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub requirement: Requirement,
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.requirement;
        match &self.problem {
            Problem::Missing => write!(f, "{} missing (want {}): {}", r.option, r.want, r.reason),
            Problem::Module => write!(f, "{}=m is a module (want y): {}", r.option, r.reason),
            Problem::Wrong { found } => {
                write!(f, "{}={found} (want {}): {}", r.option, r.want, r.reason)
            }
        }
    }
}

/// A parsed kernel `.config`: option name to value. Options written as `is not set` are
/// absent, exactly as Kconfig treats them.
#[derive(Debug, Default, Clone)]
pub struct KernelConfig {
    values: HashMap<String, String>,
}

impl KernelConfig {
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter_map(parse_config_line)
            .filter_map(|(name, want)| match want {
                Want::BuiltIn => Some((name, "y".to_owned())),
                Want::Value(v) => Some((name, v)),
                Want::Off => None,
            })
            .collect();
        Self { values }
    }

    pub fn get(&self, option: &str) -> Option<&str> {
        self.values.get(option).map(String::as_str)
    }
}

/// Every requirement `config` fails, in requirement order (which groups them by feature).
pub fn check(config: &KernelConfig, requirements: &[Requirement]) -> Vec<Finding> {
    requirements
        .iter()
        .filter_map(|req| {
            let found = config.get(&req.option);
            let problem = match (&req.want, found) {
                (Want::BuiltIn, Some("y")) => return None,
                (Want::BuiltIn, Some("m")) => Problem::Module,
                (Want::BuiltIn, None) => Problem::Missing,
                (Want::Off, None) => return None,
                (Want::Value(want), Some(v)) if v == want => return None,
                (Want::Value(_), None) => Problem::Missing,
                (_, Some(v)) => Problem::Wrong {
                    found: v.to_owned(),
                },
            };
            Some(Finding {
                requirement: req.clone(),
                problem,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragments::parse_fragment;

    fn reqs() -> Vec<Requirement> {
        parse_fragment(
            "t.config",
            "# feature: f\n# a\nCONFIG_A=y\n# b\n# CONFIG_B is not set\n# c\nCONFIG_C=7\n",
        )
        .unwrap()
    }

    #[test]
    fn a_config_that_meets_everything_has_no_findings() {
        let config = KernelConfig::parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=7\n");
        assert_eq!(check(&config, &reqs()), vec![]);
    }

    #[test]
    fn reports_missing_module_wrong_and_unwanted_options() {
        let problems = |text: &str| -> Vec<(String, Problem)> {
            check(&KernelConfig::parse(text), &reqs())
                .into_iter()
                .map(|f| (f.requirement.option, f.problem))
                .collect()
        };
        assert_eq!(
            problems("CONFIG_A=m\nCONFIG_B=y\nCONFIG_C=8\n"),
            vec![
                ("CONFIG_A".into(), Problem::Module),
                ("CONFIG_B".into(), Problem::Wrong { found: "y".into() }),
                ("CONFIG_C".into(), Problem::Wrong { found: "8".into() }),
            ]
        );
        assert_eq!(
            problems(""),
            vec![
                ("CONFIG_A".into(), Problem::Missing),
                ("CONFIG_C".into(), Problem::Missing),
            ]
        );
    }

    #[test]
    fn findings_name_the_option_and_the_reason() {
        let findings = check(&KernelConfig::parse(""), &reqs());
        assert_eq!(findings[0].to_string(), "CONFIG_A missing (want y): a");
    }
}
