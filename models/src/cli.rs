//! Command-line plumbing shared by the four binaries (`trainer`, `exporter`, `runtime`, `edge-demo`):
//! one verbosity flag and one way to set up `tracing`, so every tool logs the same way.

use clap::Args;
use serde::{Serialize, Serializer};
use tracing_subscriber::EnvFilter;

/// `-v`/`-q` flags; `RUST_LOG` (e.g. `RUST_LOG=trainer=debug`) wins over them when set.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct Verbosity {
    /// More log output: -v for debug, -vv for trace. RUST_LOG overrides this.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl Verbosity {
    /// The default filter these flags ask for.
    pub fn filter(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "warn",
            (false, 0) => "info",
            (false, 1) => "debug",
            (false, _) => "trace",
        }
    }

    /// Installs the global `tracing` subscriber, writing to stderr so that stdout stays for results
    /// (tables, JSON) that other programs read.
    pub fn init_logging(&self) {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(self.filter()));
        // A second call (tests calling a CLI entry point twice) keeps the first subscriber.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
    }
}

/// A check's outcome as JSON: `{"ok": true, "value": …}` or `{"ok": false, "error": "…"}`, rather than
/// serde's `{"Ok": …}` / `{"Err": …}` for a Rust `Result`, which no JSON reader expects.
#[derive(Debug, Serialize)]
pub struct Check<'a, T: Serialize> {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl<'a, T: Serialize> Check<'a, T> {
    pub fn of<E: std::fmt::Display>(r: &'a Result<T, E>) -> Self {
        match r {
            Ok(v) => Self { ok: true, value: Some(v), error: None },
            Err(e) => Self { ok: false, value: None, error: Some(e.to_string()) },
        }
    }
}

/// `#[serde(serialize_with = "models::cli::serialize_check")]` for a `Result` field (see [`Check`]).
pub fn serialize_check<T: Serialize, E: std::fmt::Display, S: Serializer>(r: &Result<T, E>, s: S) -> Result<S::Ok, S::Error> {
    Check::of(r).serialize(s)
}

/// [`serialize_check`] for an `Option<Result>` field (`null` when the check did not run).
pub fn serialize_opt_check<T: Serialize, E: std::fmt::Display, S: Serializer>(r: &Option<Result<T, E>>, s: S) -> Result<S::Ok, S::Error> {
    r.as_ref().map(Check::of).serialize(s)
}

/// Parses a device name as users type it, for trainer devices and runtime providers alike:
/// `cpu` → `Some(None)`, `cuda`/`gpu` → `Some(Some(0))`, `cuda:N` → `Some(Some(N))`, anything else → `None`.
pub fn parse_device_name(s: &str) -> Option<Option<usize>> {
    let t = s.trim().to_ascii_lowercase();
    match t.as_str() {
        "cpu" => Some(None),
        "cuda" | "gpu" => Some(Some(0)),
        _ => t.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Some),
    }
}

/// Ends a binary: `error: <message with its causes>` on stderr and exit status 1 on failure.
/// (Returning the error from `main` would print a debug dump, with a stack trace under RUST_BACKTRACE.)
pub fn exit<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_serialise_as_objects_not_rust_results() {
        let ok: Result<u32, String> = Ok(9);
        let bad: Result<u32, String> = Err("no GPU".into());
        assert_eq!(serde_json::to_value(Check::of(&ok)).unwrap(), serde_json::json!({"ok": true, "value": 9}));
        assert_eq!(serde_json::to_value(Check::of(&bad)).unwrap(), serde_json::json!({"ok": false, "error": "no GPU"}));
    }

    #[test]
    fn device_names() {
        assert_eq!(parse_device_name(" CPU "), Some(None));
        assert_eq!(parse_device_name("gpu"), Some(Some(0)));
        assert_eq!(parse_device_name("cuda:3"), Some(Some(3)));
        for bad in ["cuda:", "cuda:-1", "cuda:x", "tpu", ""] {
            assert_eq!(parse_device_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn verbosity_maps_to_filters() {
        let v = |verbose, quiet| Verbosity { verbose, quiet }.filter();
        assert_eq!(v(0, false), "info");
        assert_eq!(v(1, false), "debug");
        assert_eq!(v(3, false), "trace");
        assert_eq!(v(0, true), "warn");
    }
}
