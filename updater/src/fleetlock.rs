//! `lease = "fleetlock"`: a client of Zincati's FleetLock protocol, so that the reboot
//! servers Fedora CoreOS fleets already run (airlock, or any server of the protocol) decide
//! when a Gantry machine may reboot into an update.
//!
//! Two calls, each a `POST` with the header `fleet-lock-protocol: true` and the body
//! `{"client_params": {"id": MACHINE_ID, "group": GROUP}}`:
//! - `/v1/pre-reboot` before the reboot: `200` is a granted lock; any other status is "not
//!   now" (the server holds its slots for other machines, or is unwell), asked again later;
//! - `/v1/steady-state` once the new version is marked good or rolled back: `200` gives the
//!   lock back; anything else is an error, retried.
//!
//! The lock is the server's to keep: it lives across the reboot, and a machine that dies
//! holding it holds it until an operator (or the server's own policy) frees it, as with
//! Zincati.

use serde_json::json;

use crate::fetch::{FetchError, Fetcher, Url};
use crate::policy::{LeaseError, RebootLease};

/// The header every FleetLock request carries.
pub const PROTOCOL_HEADER: (&str, &str) = ("fleet-lock-protocol", "true");
/// The most a FleetLock reply may hold.
const MAX_REPLY: u64 = 64 << 10;

#[derive(Debug, Clone)]
pub struct FleetLock {
    /// The server's base URL; the calls are below it.
    pub base: Url,
    pub group: String,
    /// This machine's id.
    pub id: String,
    pub fetcher: Fetcher,
}

impl FleetLock {
    fn post(&self, call: &str) -> Result<Vec<u8>, FetchError> {
        let mut url = self.base.clone();
        let path = format!("{}/v1/{call}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let body = json!({"client_params": {"id": self.id, "group": self.group}});
        self.fetcher.post_small(
            &url,
            body.to_string().as_bytes(),
            &[PROTOCOL_HEADER],
            MAX_REPLY,
        )
    }

    fn error(&self, call: &str, e: &FetchError) -> LeaseError {
        LeaseError {
            reason: format!(
                "fleetlock {call} at {}: {}",
                self.base,
                gantry_report::error_chain(e)
            ),
        }
    }
}

impl RebootLease for FleetLock {
    fn acquire(&mut self, _version: &str) -> Result<bool, LeaseError> {
        match self.post("pre-reboot") {
            Ok(_) => Ok(true),
            // The server says no (its reason is in the body, which Zincati only logs).
            Err(FetchError::Status { .. }) => Ok(false),
            Err(e) => Err(self.error("pre-reboot", &e)),
        }
    }

    fn release(&mut self, _version: &str) -> Result<(), LeaseError> {
        self.post("steady-state")
            .map(|_| ())
            .map_err(|e| self.error("steady-state", &e))
    }
}
