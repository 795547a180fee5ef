//! Small files that must survive a power cut: written to `<name>.tmp`, fsynced, renamed
//! over `<name>`, and the directory fsynced.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}
