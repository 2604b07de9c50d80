//! `tether-bench`: a load generator for a running Tether gateway, or for one it starts
//! (`--gateway-bin`), over TCP, TLS, WebSocket or WebSocket over TLS (`--transport`).
//!
//! It starts its own service and edge clients in-process, runs one scenario for a bounded
//! time and prints one JSON object on stdout (a readable summary and a once-per-second
//! progress line go to stderr). With `--anchor`, the `rpc` and `publish` scenarios run the
//! same workload against a NATS server too, and report the ratio.
//!
//! Scenarios: `rpc`, `publish`, `stream`, `idle`, `interference`; `tether-bench help
//! <scenario>` lists each one's options.

mod anchor;
mod cli;
mod gateway;
mod idle;
mod interference;
mod measure;
mod procfs;
mod publish;
mod rpc;
mod setup;
mod stream;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use serde_json::{Map, Value};

use crate::cli::{Cli, Scenario};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tether-bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.scenario {
            Scenario::Rpc(args) => rpc::run(args).await,
            Scenario::Publish(args) => publish::run(args).await,
            Scenario::Stream(args) => stream::run(args).await,
            Scenario::Idle(args) => idle::run(args).await,
            Scenario::Interference(args) => interference::run(args).await,
        }
    });
    let code = match result {
        Ok(report) => {
            print_summary(&report);
            let mut out = std::io::stdout().lock();
            let line = Value::Object(report).to_string();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("\ntether-bench: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Thousands of idle connections or lingering clients need not close gracefully.
    runtime.shutdown_background();
    code
}

/// The readable summary on stderr: one `key: value` per line, nested objects indented.
fn print_summary(report: &Map<String, Value>) {
    fn print(map: &Map<String, Value>, indent: usize) {
        for (key, value) in map {
            match value {
                Value::Object(inner) => {
                    eprintln!("{:indent$}{key}:", "");
                    print(inner, indent + 2);
                }
                Value::Number(n) => match n.as_f64() {
                    Some(f) if n.is_f64() => eprintln!("{:indent$}{key}: {}", "", human(f)),
                    _ => eprintln!("{:indent$}{key}: {n}", ""),
                },
                other => eprintln!("{:indent$}{key}: {other}", ""),
            }
        }
    }
    eprintln!();
    print(report, 0);
}

/// A float with three significant decimals and thousands grouped by `_` for the eye.
fn human(f: f64) -> String {
    if f.abs() >= 1000.0 {
        let int = f.round() as i64;
        let digits = int.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push('_');
            }
            grouped.push(c);
        }
        if int < 0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else {
        format!("{f:.3}")
    }
}
