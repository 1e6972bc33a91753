//! Talking to `vtd`, and the CLI's errors and exit codes.
//!
//! Exit codes: 0 ok; 1 the daemon refused or failed (other 4xx/5xx);
//! 2 bad usage (options, local files); 3 `vtd` unreachable; 4 no such VM
//! (404); 5 conflict (409: name taken, VM running or not running); 6 a
//! shutdown that had to be forced.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use api::control::ErrorBody;
use serde::de::DeserializeOwned;
use vt_http::{ClientError, Response};

/// A failed command: its exit code and one line.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }

    /// Reports the error (see [`super::errors`]) and gives its exit code.
    pub fn exit(&self) -> ExitCode {
        super::errors::report(self.code, &self.message)
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

pub struct Client {
    pub socket: PathBuf,
}

fn from_client(e: ClientError) -> CliError {
    match e {
        ClientError::Connect(p, e) => CliError {
            code: 3,
            message: format!(
                "cannot reach vtd at {}: {e} (is vtd running? see --socket / VT_SOCKET)",
                p.display()
            ),
        },
        ClientError::Http(e) => CliError {
            code: 1,
            message: format!("talking to vtd: {e}"),
        },
    }
}

/// An error answer as a [`CliError`].
fn refused(r: &Response) -> CliError {
    let message = serde_json::from_slice::<ErrorBody>(&r.body).map_or_else(
        |_| format!("vtd answered {}: {}", r.status, r.text()),
        |b| b.error,
    );
    let code = match r.status {
        404 => 4,
        409 => 5,
        _ => 1,
    };
    CliError { code, message }
}

impl Client {
    /// One request; a non-2xx answer is an error.
    pub fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> CliResult<Response> {
        let r = vt_http::call(&self.socket, method, path, body).map_err(from_client)?;
        if (200..300).contains(&r.status) {
            Ok(r)
        } else {
            Err(refused(&r))
        }
    }

    /// One request, its JSON answer decoded.
    pub fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> CliResult<T> {
        let r = self.call(method, path, body)?;
        serde_json::from_slice(&r.body).map_err(|e| CliError {
            code: 1,
            message: format!("unexpected answer from vtd: {e}"),
        })
    }

    /// A streamed answer: the connection to read it from.
    pub fn stream(&self, path: &str) -> CliResult<BufReader<UnixStream>> {
        let (head, reader) =
            vt_http::open_stream(&self.socket, "GET", path, None).map_err(from_client)?;
        if head.status == 200 {
            Ok(reader)
        } else {
            Err(refused(&head))
        }
    }
}
