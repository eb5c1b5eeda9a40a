//! `xinfang` — the operator CLI (DESIGN.md §9).
//!
//! - `xinfang up --config FILE [--data DIR]`: one node — its nats-server (unless `nats.url`
//!   names one) and the services as supervised child processes; prints a ready line.
//! - `xinfang up --demo`: the Wuxi example city (hub and seven districts) with demo petitions.
//! - `xinfang up --city DIR`: every node file of DIR, each with its own nats-server, linked.
//! - `xinfang route explain --config FILE --petition FILE`: which organ, and why.
//! - `xinfang node init --code N --out DIR (--parent-url URL | --leaf-listen ADDR)`: a
//!   deployable node (node file, leaf credentials, systemd unit).
//! - `xinfang leaf-secret --code N --out DIR`: a district's leaf secret, and the line of its
//!   hash for the city's `nats.leaf_users` file.
//! - `xinfang user add --login L --name N --roles R` / `xinfang token add --name N --roles R`:
//!   a staff credential's node-file lines (DESIGN.md §11).
//! - `xinfang due --from RFC3339 --period 15d|5wd [--calendar FILE]`: a due instant.
#![forbid(unsafe_code)]

mod city;
mod credentials;
mod demo;
mod nats_server;
mod node_init;
mod prometheus;
mod route;
mod tether;
mod up;
mod wuxi;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xinfang_shared::calendar::{Calendar, Period};

#[derive(Parser)]
#[command(name = "xinfang", version, about = "xinfang: petition case routing (信访) — operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node: nats-server and the services, supervised.
    Up {
        /// The node file (TOML, DESIGN.md §8).
        #[arg(long, required_unless_present_any = ["demo", "city"])]
        config: Option<PathBuf>,
        /// Where the node keeps its data (default: data/<node code>).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Run the Wuxi example city (the hub and seven districts, each its own nats-server)
        /// with demo petitions flowing.
        #[arg(long, conflicts_with = "config")]
        demo: bool,
        /// Run every node file in this directory, each with its own nats-server, linked to the
        /// hub (the node without a parent) as leaf nodes.
        #[arg(long, conflicts_with_all = ["config", "demo"])]
        city: Option<PathBuf>,
        /// Run only this node's nats-server, supervised: another member of a clustered hub
        /// (`[nats.cluster]`), whose services run once, elsewhere.
        #[arg(long, requires = "config")]
        nats_only: bool,
    },
    /// Routing tools for operators.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Print the due instant of a period, by the code the deadlines service uses.
    Due {
        /// The triggering instant, RFC 3339 with offset.
        #[arg(long)]
        from: String,
        /// `15d` calendar days, `5wd` working days, or `Ns`/`Nm`/`Nh`.
        #[arg(long)]
        period: String,
        /// An extra yearly schedule (TOML, as in deploy/calendar/).
        #[arg(long)]
        calendar: Option<PathBuf>,
    },
    /// Deployment tools for operators.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Make (or read) a child node's leaf secret `DIR/<code>.secret` and print the line of its
    /// bcrypt hash for the parent's `nats.leaf_users` file.
    LeafSecret {
        /// The child node's code.
        #[arg(long)]
        code: String,
        /// Where the secret file is kept (point the child's `nats.leaf_credentials` at it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Staff who sign in on the pages (DESIGN.md §11).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Bearer tokens for staff tools and integrations (DESIGN.md §11).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Internal (`xinfang up`): run a program and stop it when stdin closes.
    #[command(hide = true)]
    Tether {
        program: std::ffi::OsString,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Write a deployable node: node.toml, its leaf credentials, a systemd unit.
    Init {
        /// The node's code (a Wuxi example node, or any with --from).
        #[arg(long)]
        code: String,
        /// The directory to write (node.toml, leaf/, systemd/, data/).
        #[arg(long)]
        out: PathBuf,
        /// The node file to start from (default: the Wuxi example's for the code).
        #[arg(long)]
        from: Option<PathBuf>,
        /// The node's own nats-server client address (keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:4222")]
        listen: String,
        /// A child: its parent's leaf listener, `nats-leaf://HOST:PORT`.
        #[arg(long, conflicts_with = "leaf_listen")]
        parent_url: Option<String>,
        /// The top node: where its children's leaf links arrive, `HOST:PORT`.
        #[arg(long)]
        leaf_listen: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Read a password from standard input; print the `[[auth.users]]` entry with its
    /// argon2id hash, to paste into the node file.
    Add {
        #[arg(long)]
        login: String,
        /// The name shown on the pages (e.g. 王丽).
        #[arg(long)]
        name: String,
        /// organ, bureau, office, auditor (comma-separated).
        #[arg(long, required = true, num_args = 1..)]
        roles: Vec<String>,
        /// The organ an `organ` user works for.
        #[arg(long)]
        organ_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token (shown once, on standard error); print the `[[auth.tokens]]` entry with
    /// its SHA-256, to paste into the node file.
    Add {
        #[arg(long)]
        name: String,
        /// organ, bureau, office, auditor, integration (comma-separated).
        #[arg(long, required = true, num_args = 1..)]
        roles: Vec<String>,
        /// The organ an `organ` token acts for.
        #[arg(long)]
        organ_id: Option<String>,
        /// The channel an `integration` token submits on (e.g. hotline_12345).
        #[arg(long)]
        channel: Option<String>,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Which organ a petition would go to, and why.
    Explain {
        /// The node file with the rules.
        #[arg(long)]
        config: PathBuf,
        /// A petition as JSON (the body of POST /v1/petitions).
        #[arg(long)]
        petition: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up { config: Some(config), data, nats_only, .. } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(up::main(config, data, nats_only))
        }
        Command::Up { config: None, data, demo, city, .. } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(city::main(city, data, demo))
        }
        Command::Route { command: RouteCommand::Explain { config, petition } } => route::explain(&config, &petition),
        Command::Due { from, period, calendar } => due(&from, &period, calendar),
        Command::LeafSecret { code, out } => leaf_secret(&code, &out),
        Command::Node { command: NodeCommand::Init { code, out, from, listen, parent_url, leaf_listen } } => {
            node_init::main(node_init::Init { code, out, from, listen, parent_url, leaf_listen })
        }
        Command::User { command: UserCommand::Add { login, name, roles, organ_id } } => {
            credentials::user_add(&login, &name, &roles, organ_id)
        }
        Command::Token { command: TokenCommand::Add { name, roles, organ_id, channel } } => {
            credentials::token_add(&name, &roles, organ_id, channel)
        }
        Command::Tether { program, args } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            std::process::exit(runtime.block_on(tether::main(program, args)))
        }
    }
}

fn leaf_secret(code: &str, out: &std::path::Path) -> ExitCode {
    let made = xinfang_shared::ids::NodeCode::parse(code)
        .map_err(|e| format!("--code {code:?}: {e}"))
        .and_then(|child| xinfang_shared::leaf_auth::secret_file(out, &child))
        .and_then(|(path, secret)| Ok((path, xinfang_shared::leaf_auth::hash(&secret)?)));
    match made {
        Ok((path, hash)) => {
            eprintln!(
                "secret in {} (nats.leaf_credentials of node {code}); for the parent's nats.leaf_users:",
                path.display()
            );
            println!("{code} = {hash:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xinfang leaf-secret: {e}");
            ExitCode::from(2)
        }
    }
}

fn due(from: &str, period: &str, calendar: Option<PathBuf>) -> ExitCode {
    let from = match chrono::DateTime::parse_from_rfc3339(from) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xinfang due: --from {from:?}: {e} (expected RFC 3339, e.g. 2025-09-20T10:00:00+08:00)");
            return ExitCode::from(2);
        }
    };
    let period = match Period::parse(period) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xinfang due: --period: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cal = Calendar::shipped();
    if let Some(path) = calendar {
        match std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| cal.load_toml(&t)) {
            Ok(_) => {}
            Err(e) => {
                eprintln!("xinfang due: --calendar {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let due = cal.due(from, period);
    println!("{}", xinfang_shared::time::rfc3339(due.at));
    if due.provisional {
        eprintln!("provisional: a counted day lies in a year with no loaded holiday schedule");
    }
    ExitCode::SUCCESS
}
