//! A QMP (QEMU Machine Protocol) client: one JSON object per line over a Unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP sent something that is not JSON: {0:?}")]
    Garbage(String),
    #[error("QMP closed the connection")]
    Closed,
    #[error("QMP command {command} failed: {error}")]
    Command { command: String, error: Value },
}

/// A negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events (`{"event": …}`) seen while waiting for command replies.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects (retrying until `timeout`, QEMU may not have made the socket yet) and
    /// leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source: e,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: Vec::new(),
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Garbage(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let v = self.read()?;
            if let Some(ret) = v.get("return") {
                return Ok(ret.clone());
            }
            if let Some(error) = v.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    error: error.clone(),
                });
            }
            self.events.push(v);
        }
    }

    fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Garbage(line))
    }
}
