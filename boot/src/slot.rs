//! The two root slots and the boot state GRUB keeps for each.

use std::fmt;
use std::str::FromStr;

/// One of the two root slots: partitions ROOT-A and ROOT-B, and their kernels on the ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The GPT partition name of the slot's root.
    pub fn partition_name(self) -> &'static str {
        match self {
            Slot::A => "ROOT-A",
            Slot::B => "ROOT-B",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a slot (want A or B)")]
pub struct ParseSlotError(pub String);

impl FromStr for Slot {
    type Err = ParseSlotError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            // Exactly as GRUB's script compares them: case matters.
            "A" => Ok(Slot::A),
            "B" => Ok(Slot::B),
            other => Err(ParseSlotError(other.to_owned())),
        }
    }
}

/// What GRUB knows about a slot: whether it was ever marked good, and how many trial boots
/// it has left. A slot with no tries left that is not good is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotState {
    pub good: bool,
    pub tries: u8,
}

impl SlotState {
    /// A slot that booted healthy and needs no more trials.
    pub const GOOD: SlotState = SlotState {
        good: true,
        tries: 0,
    };
    /// A slot with nothing bootable (an empty ROOT-B on a fresh disk).
    pub const EMPTY: SlotState = SlotState {
        good: false,
        tries: 0,
    };

    /// Whether GRUB would boot this slot when its turn in the order comes.
    pub fn bootable(self) -> bool {
        self.good || self.tries > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_parse_and_print_round_trip() {
        for slot in Slot::ALL {
            assert_eq!(slot.as_str().parse::<Slot>(), Ok(slot));
            assert_eq!(slot.other().other(), slot);
        }
        assert_eq!("C".parse::<Slot>(), Err(ParseSlotError("C".into())));
        assert_eq!("a".parse::<Slot>(), Err(ParseSlotError("a".into())));
    }

    #[test]
    fn a_slot_without_tries_that_was_never_good_is_not_bootable() {
        assert!(!SlotState::EMPTY.bootable());
        assert!(SlotState::GOOD.bootable());
        assert!(SlotState {
            good: false,
            tries: 1
        }
        .bootable());
    }
}
