//! External programs the build runs, each named with the Debian package that provides it,
//! checked for up front, and run so that a failure names the exact command.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A program the build needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const MKFS_EROFS: Tool = Tool {
    program: "mkfs.erofs",
    package: "erofs-utils",
};
pub const VERITYSETUP: Tool = Tool {
    program: "veritysetup",
    package: "cryptsetup-bin",
};
pub const MKFS_VFAT: Tool = Tool {
    program: "mkfs.vfat",
    package: "dosfstools",
};
pub const MMD: Tool = Tool {
    program: "mmd",
    package: "mtools",
};
pub const MCOPY: Tool = Tool {
    program: "mcopy",
    package: "mtools",
};
pub const GRUB_MKIMAGE: Tool = Tool {
    program: "grub-mkimage",
    package: "grub-efi-amd64-bin",
};
pub const GRUB_SCRIPT_CHECK: Tool = Tool {
    program: "grub-script-check",
    package: "grub-common",
};
pub const SFDISK: Tool = Tool {
    program: "sfdisk",
    package: "fdisk",
};
pub const MKFS_EXT4: Tool = Tool {
    program: "mkfs.ext4",
    package: "e2fsprogs",
};
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
};
pub const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};
pub const MAKE: Tool = Tool {
    program: "make",
    package: "make",
};
pub const CC: Tool = Tool {
    program: "gcc",
    package: "build-essential",
};
pub const LD: Tool = Tool {
    program: "ld",
    package: "binutils",
};
pub const BISON: Tool = Tool {
    program: "bison",
    package: "bison",
};
pub const FLEX: Tool = Tool {
    program: "flex",
    package: "flex",
};
pub const BC: Tool = Tool {
    program: "bc",
    package: "bc",
};
pub const ZSTD: Tool = Tool {
    program: "zstd",
    package: "zstd",
};

/// Every tool a full build runs.
pub const ALL: &[Tool] = &[
    MKFS_EROFS,
    VERITYSETUP,
    MKFS_VFAT,
    MMD,
    MCOPY,
    GRUB_MKIMAGE,
    SFDISK,
    MKFS_EXT4,
    QEMU_IMG,
    TAR,
    MAKE,
    CC,
    LD,
    BISON,
    FLEX,
    BC,
    ZSTD,
];

/// A command line as it was run, for error messages.
#[derive(Debug, Clone)]
pub struct CommandLine(pub String);

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("missing tools: {}; install with: apt-get install {}", programs(.0), packages(.0))]
    Missing(Vec<Tool>),
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: CommandLine,
        source: std::io::Error,
    },
    #[error("cannot write the input of `{command}`: {source}")]
    Stdin {
        command: CommandLine,
        source: std::io::Error,
    },
    #[error("cannot wait for `{command}`: {source}")]
    Wait {
        command: CommandLine,
        source: std::io::Error,
    },
    /// `output` is the tail of standard error, or of standard output when that is empty.
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: CommandLine,
        status: std::process::ExitStatus,
        output: String,
    },
}

fn programs(tools: &[Tool]) -> String {
    let mut names: Vec<&str> = tools.iter().map(|t| t.program).collect();
    names.dedup();
    names.join(", ")
}

fn packages(tools: &[Tool]) -> String {
    let mut pkgs: Vec<&str> = tools.iter().map(|t| t.package).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    pkgs.join(" ")
}

/// Fails with every missing tool and its package, so one run says all that is needed.
pub fn require(tools: &[Tool]) -> Result<(), ToolError> {
    let missing: Vec<Tool> = tools.iter().copied().filter(|t| !t.exists()).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ToolError::Missing(missing))
    }
}

impl Tool {
    /// Whether the program is on `PATH` (or the sbin directories a non-root PATH may lack).
    pub fn exists(&self) -> bool {
        self.resolve().is_some()
    }

    fn resolve(&self) -> Option<OsString> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(Into::into))
            .map(|dir| dir.join(self.program))
            .find(|p| p.is_file())
            .map(Into::into)
    }

    /// Starts a command line for this tool.
    pub fn cmd(&self) -> Invocation {
        let program = self.resolve().unwrap_or_else(|| self.program.into());
        Invocation::new(program, self.program)
    }
}

/// A command being put together; runs with stdin closed and output captured.
#[derive(Debug)]
pub struct Invocation {
    command: Command,
    shown: Vec<String>,
}

impl Invocation {
    /// A command line for a program that is not a [`Tool`] (cargo, found by its caller);
    /// `shown` is its name in messages.
    pub fn new(program: impl AsRef<OsStr>, shown: &str) -> Self {
        Invocation {
            shown: vec![shown.to_owned()],
            command: Command::new(program),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.shown.push(quote(arg.as_ref()));
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.shown
            .insert(0, format!("{key}={}", quote(value.as_ref())));
        self.command.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Runs to completion; returns standard output.
    pub fn run(self) -> Result<String, ToolError> {
        self.run_with_stdin(None)
    }

    /// Runs with `input` on standard input.
    pub fn run_with_stdin(mut self, input: Option<&[u8]>) -> Result<String, ToolError> {
        use std::io::Write;
        let command = CommandLine(self.shown.join(" "));
        self.command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.command.spawn().map_err(|source| ToolError::Spawn {
            command: command.clone(),
            source,
        })?;
        // Feed stdin from a thread while wait_with_output drains stdout and stderr, so that
        // neither side can fill a pipe and block the other.
        let feeder = match (input, child.stdin.take()) {
            (Some(input), Some(mut stdin)) => {
                let input = input.to_vec();
                Some(std::thread::spawn(move || stdin.write_all(&input)))
            }
            _ => None,
        };
        let out = child.wait_with_output();
        let fed = feeder.map(|f| f.join());
        let out = out.map_err(|source| ToolError::Wait {
            command: command.clone(),
            source,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            // The last lines say what went wrong; a kernel build prints thousands.
            let text = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(ToolError::Failed {
                command,
                status: out.status,
                output: tail.join("\n"),
            });
        }
        match fed {
            Some(Ok(Err(source))) => return Err(ToolError::Stdin { command, source }),
            Some(Err(_)) => {
                return Err(ToolError::Stdin {
                    command,
                    source: std::io::Error::other("stdin writer panicked"),
                })
            }
            _ => {}
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_name_their_debian_packages() {
        let ghost = Tool {
            program: "gantry-no-such-program",
            package: "gantry-ghost",
        };
        let err = require(&[ghost, ghost]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing tools: gantry-no-such-program; install with: apt-get install gantry-ghost"
        );
    }

    #[test]
    fn a_failing_command_is_named_exactly_in_the_error() {
        let sh = Tool {
            program: "sh",
            package: "dash",
        };
        let err = sh
            .cmd()
            .arg("-c")
            .arg("echo doomed >&2; exit 3")
            .env("X", "a b")
            .run()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("`X='a b' sh -c 'echo doomed >&2; exit 3'` failed"),
            "{text}"
        );
        assert!(text.ends_with("doomed"), "{text}");
    }

    #[test]
    fn output_and_stdin_pass_through() {
        let cat = Tool {
            program: "cat",
            package: "coreutils",
        };
        assert_eq!(cat.cmd().run_with_stdin(Some(b"hi")).unwrap(), "hi");
        // More than a pipe holds in both directions at once: must not deadlock.
        let big = vec![b'x'; 4 << 20];
        assert_eq!(
            cat.cmd().run_with_stdin(Some(&big)).unwrap().len(),
            big.len()
        );
    }
}
