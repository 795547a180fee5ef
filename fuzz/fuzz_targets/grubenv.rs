//! GRUB's environment block (`gantry_boot::grubenv`), read from the ESP at every boot and
//! by every update: whoever can write the disk writes it.
//!
//! Checks: a block that parses writes back to one of exactly 1024 bytes (or refuses as too
//! large, never a shorter or longer block), which parses to the same variables; reading
//! the slot order and both slots' states never panics.
#![no_main]

use gantry_boot::grubenv::{GrubEnv, GrubenvError, BLOCK_SIZE};
use gantry_boot::Slot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = GrubEnv::parse(data) else {
        return;
    };
    let _ = env.order();
    let _ = env.slot(Slot::A);
    let _ = env.slot(Slot::B);
    match env.to_block() {
        Ok(block) => {
            assert_eq!(block.len(), BLOCK_SIZE);
            assert_eq!(GrubEnv::parse(&block).as_ref(), Ok(&env));
        }
        Err(GrubenvError::TooLarge(n)) => assert!(n > BLOCK_SIZE),
        Err(e) => panic!("a parsed block does not write back: {e}"),
    }
});
