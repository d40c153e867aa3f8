//! peerdex client: an interactive shell that talks to the directory server
//! and shares files with other peers (see `docs/PROTOCOL.md`).
//!
//! Layout:
//! - [`cli`]: command-line arguments.
//! - [`shell`]: the input loop ([`shell::editor`] on a terminal, plain lines
//!   on a pipe), [`shell::command`] (line -> [`shell::command::Command`]) and
//!   [`shell::output`] (the exact result lines of the output contract).
//! - [`session`]: the shell's state (current and connected user, known
//!   peers) and the execution of each command, one file per command with
//!   more to it than a request (`publish`, `share`, `get_file`, `search`,
//!   `connect_form`).
//! - [`directory_client`]: one TCP connection per directory operation;
//!   [`directory_ext_client`]: the extension ops, remembering whether the
//!   directory has them (a classic one closes without a reply). Named
//!   `_client` so that they are not mistaken for the server's rules.
//! - [`time_source`]: the DATETIME of requests (RPC logger or local clock).
//! - [`content`]: BLAKE3 piece hashing and the share's hash cache.
//! - [`directory_session`]: a persistent, authenticated session with a
//!   peerdex directory (pipelined calls, heartbeats, events); the shell's
//!   choice between it and classic connections is `session::route`.
//! - [`passwords`]: login and new passwords (no-echo prompt, file, env).
//! - [`peer`]: peer-to-peer GET_FILE: [`peer::listener`] serves the files
//!   opened by [`peer::share_dir`] that [`peer::published`]'s durable
//!   record says the user published through peerdex;
//!   [`peer::fetch`] downloads them (verified, resumable, multi-source
//!   through the piece engine [`peer::swarm`]; classic [`peer::download`] as fallback).
//!
//! Invariant: stdout carries only the contract lines (and HELP); reasons and
//! warnings go to stderr.
//!
//! Public API: [`run`], [`Status`] and [`cli`] for the binary, and the
//! download path that `peerdex-bench fetch-worker` drives ([`peer::fetch`],
//! [`peer::download`], [`peer::sources::Source`], [`peer::PeerAddr`]).
//! Every other module is `pub(crate)`, so that the compiler reports what
//! nothing uses.

pub mod cli;
pub(crate) mod content;
pub(crate) mod directory_client;
pub(crate) mod directory_ext_client;
pub(crate) mod directory_session;
pub(crate) mod passwords;
pub mod peer;
pub(crate) mod server_profiles;
pub(crate) mod session;
pub(crate) mod shell;
pub(crate) mod time_source;

pub use shell::Status;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use cli::Args;
use directory_client::DirectoryClient;
use peer::share_dir::ShareDir;
use session::{Session, SessionConfig};
use time_source::TimeSource;

/// Runs the client with parsed arguments until QUIT or end of input.
pub async fn run(args: Args) -> anyhow::Result<shell::Status> {
    let share_dir = args.share_dir.unwrap_or_else(|| PathBuf::from("."));
    let share = ShareDir::new(&share_dir)
        .with_context(|| format!("cannot share {}", share_dir.display()))?;
    let directory = DirectoryClient::new(args.server, args.port);
    let state_dir = args
        .state_dir
        .clone()
        .or_else(server_profiles::default_state_dir);
    let profile = server_profiles::ServerProfile::load(state_dir.as_deref(), &directory.key());
    let config = SessionConfig {
        state_dir: state_dir.clone(),
        directory,
        profile,
        time: TimeSource::new(args.time_service),
        share,
        listen: args.listen,
        progress: std::io::IsTerminal::is_terminal(&std::io::stdin())
            && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        auto_share: args.share.map(|dir| dir.to_string_lossy().into_owned()),
        passwords: Arc::new(passwords::Passwords::from_env(
            std::io::IsTerminal::is_terminal(&std::io::stdin()),
            args.password_file,
            args.new_password_file,
        )),
    };
    let known_users = Arc::new(Mutex::new(Vec::new()));
    let session = Session::new(config, Arc::clone(&known_users));
    shell::run(session, known_users, args.history).await
}
