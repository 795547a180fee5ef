//! The few etcd v3 calls the fleet work needs, over etcd's JSON gateway (`POST /v3/...`,
//! keys and values in base64, int64s as strings) with the updater's own HTTP client
//! ([`crate::fetch`]): no gRPC stack in PID 1 for six calls. Errors name the endpoint, the
//! call and the reason.

use base64::Engine as _;
use gantry_report::error_chain;
use serde_json::{json, Value};

use crate::fetch::{Fetcher, Url};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The most an etcd reply may hold.
const MAX_REPLY: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct Etcd {
    /// The client URL, e.g. `http://10.0.2.102:2379`.
    pub endpoint: Url,
    pub fetcher: Fetcher,
}

/// A key and what etcd keeps with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    /// The lease it is on; 0: none.
    pub lease: i64,
    pub create_revision: i64,
}

impl Etcd {
    fn call(&self, path: &str, body: Value) -> Result<Value, String> {
        let fail = |reason: String| format!("etcd {}{path}: {reason}", self.endpoint);
        let url = self
            .endpoint
            .join(path)
            .map_err(|e| fail(format!("bad URL: {e}")))?;
        let bytes = self
            .fetcher
            .post_small(&url, body.to_string().as_bytes(), &[], MAX_REPLY)
            .map_err(|e| fail(error_chain(&e)))?;
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("reply is not JSON: {e}")))
    }

    /// Every key starting with `prefix`, oldest first (by `create_revision`).
    pub fn range_prefix(&self, prefix: &str) -> Result<Vec<Kv>, String> {
        self.range_prefix_at(prefix, None)
    }

    /// The store's revision now.
    pub fn revision(&self) -> Result<i64, String> {
        let reply = self.call("/v3/kv/range", json!({"key": B64.encode("/"), "limit": 1}))?;
        int(&reply["header"]["revision"])
            .ok_or_else(|| format!("etcd {}: range reply has no revision", self.endpoint))
    }

    /// As [`Self::range_prefix`], as the store was at `revision` (etcd keeps history until
    /// it is compacted): what the fleet looked like then.
    pub fn range_prefix_at(&self, prefix: &str, revision: Option<i64>) -> Result<Vec<Kv>, String> {
        let mut body = json!({
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "sort_order": "ASCEND",
            "sort_target": "CREATE",
        });
        if let Some(r) = revision {
            body["revision"] = r.to_string().into();
        }
        let reply = self.call("/v3/kv/range", body)?;
        let bad = |what: String| format!("etcd {}: range reply: {what}", self.endpoint);
        let mut out = Vec::new();
        for kv in reply["kvs"].as_array().into_iter().flatten() {
            let decode = |field: &str| -> Result<String, String> {
                let raw = B64
                    .decode(kv[field].as_str().unwrap_or_default())
                    .map_err(|_| bad(format!("{field} is not base64")))?;
                String::from_utf8(raw).map_err(|_| bad(format!("{field} is not UTF-8")))
            };
            out.push(Kv {
                key: decode("key")?,
                value: decode("value")?,
                lease: int(&kv["lease"]).unwrap_or(0),
                create_revision: int(&kv["create_revision"]).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Puts `key` = `value`, on `lease` if given.
    pub fn put(&self, key: &str, value: &str, lease: Option<i64>) -> Result<(), String> {
        let mut body = json!({"key": B64.encode(key), "value": B64.encode(value)});
        if let Some(l) = lease {
            body["lease"] = l.to_string().into();
        }
        self.call("/v3/kv/put", body).map(|_| ())
    }

    pub fn delete(&self, key: &str) -> Result<(), String> {
        self.call("/v3/kv/deleterange", json!({"key": B64.encode(key)}))
            .map(|_| ())
    }

    /// A new lease of `ttl_secs`; its id.
    pub fn grant(&self, ttl_secs: u64) -> Result<i64, String> {
        let grant = self.call("/v3/lease/grant", json!({ "TTL": ttl_secs }))?;
        int(&grant["ID"]).ok_or_else(|| {
            format!(
                "etcd {}: lease grant reply has no ID: {grant}",
                self.endpoint
            )
        })
    }

    /// Renews `lease` for its whole TTL again; its TTL now, or `None` when the lease is
    /// gone (expired or revoked). One request and its reply: the gateway's keep-alive
    /// stream ends when the request body does.
    pub fn keep_alive(&self, lease: i64) -> Result<Option<i64>, String> {
        let reply = self.call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))?;
        // An error inside a 200 (no leader during an election, say) is not "gone".
        let result = &reply["result"];
        if int(&result["ID"]) != Some(lease) {
            return Err(format!(
                "etcd {}/v3/lease/keepalive: no result for lease {lease}: {}",
                self.endpoint,
                reply.to_string().chars().take(300).collect::<String>()
            ));
        }
        Ok(int(&result["TTL"]).filter(|ttl| *ttl > 0))
    }

    pub fn revoke(&self, lease: i64) -> Result<(), String> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .map(|_| ())
    }
}

/// The end of etcd's range for keys starting with `prefix`: the prefix with its last byte
/// raised by one.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An int64 of the gateway's JSON: a string of digits (or, from some versions, a number).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_end_after_the_prefix_and_int64s_are_strings() {
        assert_eq!(
            prefix_end("/gantry/reboot/g/"),
            b"/gantry/reboot/g0".to_vec()
        );
        assert_eq!(int(&json!("694d7ff1b0e2a10a")), None);
        assert_eq!(
            int(&json!("7587862772376715786")),
            Some(7_587_862_772_376_715_786)
        );
        assert_eq!(int(&json!(12)), Some(12));
    }
}
