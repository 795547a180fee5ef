//! GRUB's environment block (`grubenv`): a 1024-byte file of `name=value` lines padded with
//! `#`, which GRUB's `load_env`/`save_env` read and rewrite in place.
//!
//! Gantry keeps its boot state there: `gantry_order` (slots in preference order) and, per
//! slot, `<slot>_good` and `<slot>_tries`. GRUB decrements the tries of the slot it boots
//! and saves the block before booting it; once a slot proves healthy it is marked good (the
//! health-gated commit that sets `<slot>_good=1` comes with the updater).

use std::collections::BTreeMap;

use crate::{Slot, SlotState};

/// The size GRUB requires of an environment block.
pub const BLOCK_SIZE: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

/// The most tries a slot may be given: GRUB script has no arithmetic, so the boot script
/// decrements with one comparison per value and must know the largest.
pub const MAX_TRIES: u8 = 9;
const TRIES_RANGE: &str = "must be a number from 0 to MAX_TRIES (9)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrubenvError {
    #[error("environment block is {0} bytes, not {BLOCK_SIZE}")]
    Size(usize),
    #[error("environment block does not start with {HEADER:?}")]
    Header,
    #[error("environment block is not UTF-8")]
    Encoding,
    #[error("line {0:?} is not name=value")]
    Line(String),
    #[error("variable name {0:?} is not [A-Za-z0-9_]+")]
    Name(String),
    #[error("value of {name} contains a newline or a backslash")]
    Value { name: String },
    #[error("variables take {0} bytes, more than fit in a {BLOCK_SIZE}-byte block")]
    TooLarge(usize),
    #[error("{name}={value:?} is not valid: {reason}")]
    State {
        name: String,
        value: String,
        reason: &'static str,
    },
}

/// The variables of an environment block, in name order (which makes the block's bytes a
/// function of its contents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubEnv {
    vars: BTreeMap<String, String>,
}

impl GrubEnv {
    pub fn new() -> Self {
        Self::default()
    }

    /// The boot state of a new disk: `first` is good and preferred, the other slot empty.
    pub fn initial(first: Slot) -> Self {
        let mut env = Self::new();
        env.set_order(&[first, first.other()]);
        env.set_slot(first, SlotState::GOOD);
        env.set_slot(first.other(), SlotState::EMPTY);
        env
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Sets a variable; names and values that GRUB could not read back are refused.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), GrubenvError> {
        check_name(name)?;
        if value.contains(['\n', '\\']) {
            return Err(GrubenvError::Value {
                name: name.to_owned(),
            });
        }
        self.vars.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    pub fn order(&self) -> Result<Vec<Slot>, GrubenvError> {
        let value = self.get("gantry_order").unwrap_or("");
        value
            .split_whitespace()
            .map(|s| {
                s.parse().map_err(|_| GrubenvError::State {
                    name: "gantry_order".into(),
                    value: value.into(),
                    reason: "each entry must be A or B",
                })
            })
            .collect()
    }

    pub fn set_order(&mut self, order: &[Slot]) {
        let value: Vec<&str> = order.iter().map(|s| s.as_str()).collect();
        self.vars.insert("gantry_order".into(), value.join(" "));
    }

    pub fn slot(&self, slot: Slot) -> Result<SlotState, GrubenvError> {
        let good_name = format!("{slot}_good");
        let tries_name = format!("{slot}_tries");
        let good = match self.get(&good_name).unwrap_or("0") {
            "1" => true,
            "0" => false,
            other => {
                return Err(GrubenvError::State {
                    name: good_name,
                    value: other.into(),
                    reason: "must be 0 or 1",
                })
            }
        };
        let raw = self.get(&tries_name).unwrap_or("0");
        let tries = raw
            .parse::<u8>()
            .ok()
            .filter(|t| *t <= MAX_TRIES)
            .ok_or_else(|| GrubenvError::State {
                name: tries_name,
                value: raw.into(),
                reason: TRIES_RANGE,
            })?;
        Ok(SlotState { good, tries })
    }

    pub fn set_slot(&mut self, slot: Slot, state: SlotState) {
        let tries = state.tries.min(MAX_TRIES);
        self.vars
            .insert(format!("{slot}_good"), u8::from(state.good).to_string());
        self.vars.insert(format!("{slot}_tries"), tries.to_string());
    }

    /// Parses a block as GRUB writes it.
    pub fn parse(block: &[u8]) -> Result<Self, GrubenvError> {
        if block.len() != BLOCK_SIZE {
            return Err(GrubenvError::Size(block.len()));
        }
        let text = std::str::from_utf8(block).map_err(|_| GrubenvError::Encoding)?;
        let body = text.strip_prefix(HEADER).ok_or(GrubenvError::Header)?;
        let mut env = Self::new();
        // GRUB ends lines with '\n' only: a '\r' is part of the value (`str::lines` would
        // drop one before a final '\n', and the block would not read back as it was).
        for line in body.split('\n') {
            // Padding and comments start with '#'.
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| GrubenvError::Line(line.to_owned()))?;
            check_name(name)?;
            env.vars.insert(name.to_owned(), value.to_owned());
        }
        Ok(env)
    }

    /// Serialises to exactly [`BLOCK_SIZE`] bytes.
    pub fn to_block(&self) -> Result<Vec<u8>, GrubenvError> {
        let mut out = String::from(HEADER);
        for (name, value) in &self.vars {
            out.push_str(name);
            out.push('=');
            out.push_str(value);
            out.push('\n');
        }
        if out.len() > BLOCK_SIZE {
            return Err(GrubenvError::TooLarge(out.len()));
        }
        let mut block = out.into_bytes();
        block.resize(BLOCK_SIZE, b'#');
        Ok(block)
    }
}

fn check_name(name: &str) -> Result<(), GrubenvError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(GrubenvError::Name(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carriage_return_is_part_of_the_value_and_reads_back_the_same() {
        // The last line without its '\n', ending in '\r': written back, it gains a '\n'.
        let tail = "\ny=2\r";
        let mut block = String::from(HEADER);
        block.extend(std::iter::repeat_n(
            '#',
            BLOCK_SIZE - HEADER.len() - tail.len(),
        ));
        block.push_str(tail);
        let env = GrubEnv::parse(block.as_bytes()).unwrap();
        assert_eq!(env.get("y"), Some("2\r"));
        let again = GrubEnv::parse(&env.to_block().unwrap()).unwrap();
        assert_eq!(again, env);
    }

    #[test]
    fn initial_block_is_grub_format_and_round_trips() {
        let env = GrubEnv::initial(Slot::A);
        let block = env.to_block().unwrap();
        assert_eq!(block.len(), BLOCK_SIZE);
        assert!(block.starts_with(b"# GRUB Environment Block\nA_good=1\nA_tries=0\n"));
        assert_eq!(*block.last().unwrap(), b'#');
        let back = GrubEnv::parse(&block).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.order().unwrap(), vec![Slot::A, Slot::B]);
        assert_eq!(back.slot(Slot::A).unwrap(), SlotState::GOOD);
        assert_eq!(back.slot(Slot::B).unwrap(), SlotState::EMPTY);
    }

    #[test]
    fn parses_a_block_written_by_grub_editenv() {
        // Bytes as `grub-editenv f set gantry_order="B A" B_tries=2` leaves them.
        let mut block = b"# GRUB Environment Block\ngantry_order=B A\nB_tries=2\n".to_vec();
        block.resize(BLOCK_SIZE, b'#');
        let env = GrubEnv::parse(&block).unwrap();
        assert_eq!(env.order().unwrap(), vec![Slot::B, Slot::A]);
        assert_eq!(
            env.slot(Slot::B).unwrap(),
            SlotState {
                good: false,
                tries: 2
            }
        );
    }

    #[test]
    fn refuses_blocks_of_the_wrong_size_or_header() {
        assert_eq!(GrubEnv::parse(&[b'#'; 10]), Err(GrubenvError::Size(10)));
        assert_eq!(
            GrubEnv::parse(&[b'#'; BLOCK_SIZE]),
            Err(GrubenvError::Header)
        );
    }

    #[test]
    fn refuses_bad_names_values_and_states() {
        let mut env = GrubEnv::new();
        assert!(matches!(env.set("a b", "1"), Err(GrubenvError::Name(_))));
        assert!(matches!(
            env.set("a", "x\ny"),
            Err(GrubenvError::Value { .. })
        ));
        env.set("A_tries", "12").unwrap();
        assert!(matches!(env.slot(Slot::A), Err(GrubenvError::State { .. })));
        env.set("gantry_order", "A C").unwrap();
        assert!(matches!(env.order(), Err(GrubenvError::State { .. })));
    }

    #[test]
    fn refuses_more_than_fits_in_a_block() {
        let mut env = GrubEnv::new();
        env.set("big", &"x".repeat(BLOCK_SIZE)).unwrap();
        assert!(matches!(env.to_block(), Err(GrubenvError::TooLarge(_))));
    }
}
