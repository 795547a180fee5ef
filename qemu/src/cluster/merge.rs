//! Node configs: the cluster's base config with a node's overlay on top, key by key.
//!
//! Tables merge recursively; any other value (a string, a number, an array, an array of
//! tables such as `[[network.interfaces]]`) in the upper document replaces the lower one
//! whole. So an overlay can change one container's image without restating the rest, and
//! a node's own `[[network.interfaces]]` list replaces the cluster's.

use toml::{Table, Value};

/// `upper` merged onto `lower`.
pub fn merge(mut lower: Table, upper: Table) -> Table {
    for (key, value) in upper {
        match (lower.get_mut(&key), value) {
            (Some(Value::Table(below)), Value::Table(above)) => {
                let merged = merge(std::mem::take(below), above);
                *below = merged;
            }
            (_, value) => {
                lower.insert(key, value);
            }
        }
    }
    lower
}

/// Parses a config document, naming `what` (a file) in the error.
pub fn parse(text: &str, what: &str) -> Result<Table, String> {
    text.parse::<Table>()
        .map_err(|e| format!("{what}: not a TOML document: {}", e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Table {
        parse(s, "t").unwrap()
    }

    #[test]
    fn tables_merge_key_by_key_and_other_values_replace() {
        let base = t(r#"
            version = 1
            hostname = "base"
            [containers.web]
            image = "web:1"
            ports = ["80:80"]
            [[network.interfaces]]
            name = "eth0"
        "#);
        let overlay = t(r#"
            hostname = "node-2"
            [containers.web]
            image = "web:2"
            [containers.db]
            image = "db:1"
            [[network.interfaces]]
            name = "eth1"
        "#);
        let m = merge(base, overlay);
        assert_eq!(m["version"].as_integer(), Some(1));
        assert_eq!(m["hostname"].as_str(), Some("node-2"));
        let web = m["containers"]["web"].as_table().unwrap();
        assert_eq!(web["image"].as_str(), Some("web:2"));
        assert_eq!(
            web["ports"].as_array().unwrap().len(),
            1,
            "kept from the base"
        );
        assert_eq!(m["containers"]["db"]["image"].as_str(), Some("db:1"));
        let ifaces = m["network"]["interfaces"].as_array().unwrap();
        assert_eq!(ifaces.len(), 1, "an array of tables is replaced whole");
        assert_eq!(ifaces[0]["name"].as_str(), Some("eth1"));
    }

    #[test]
    fn a_table_replaced_by_a_value_and_back() {
        let m = merge(t("a = { b = 1 }"), t("a = 3"));
        assert_eq!(m["a"].as_integer(), Some(3));
        let m = merge(t("a = 3"), t("a = { b = 1 }"));
        assert_eq!(m["a"]["b"].as_integer(), Some(1));
    }

    #[test]
    fn a_bad_document_is_named() {
        let e = parse("a = ", "node-2.toml").unwrap_err();
        assert!(e.starts_with("node-2.toml: not a TOML document"), "{e}");
    }
}
