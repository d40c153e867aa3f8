//! Which form of CONNECT the directory reads, found out once per server.
//!
//! PROTOCOL.md's CONNECT carries `IP` then `PORT`, and lets a client send
//! only `PORT`. Some deployed servers read a single field after USER and
//! take it as the port: they would list us at port `127` (our IP, read as
//! a number) where no peer can reach us. So, unless the server is known
//! (a peerdex directory reads both forms; a remembered finding), the shell
//! checks its own LIST_USERS entry once after CONNECT, and when the port is
//! not its listener's, connects again in the port-only form. The finding
//! is remembered per server ([`crate::server_profiles`]).

use std::net::SocketAddr;

use peerdex_protocol::{ConnectAddr, Operation, Outcome, Reply};

use super::{request, Session};
use crate::directory_client::DirectoryError;
use crate::server_profiles::{ConnectForm, Extensions};

impl Session {
    /// Sends CONNECT for a listener at `listen` in the form the directory
    /// is known to read (the full form when nothing is known). An
    /// unspecified listener IP is replaced by the local IP of the
    /// connection to the directory.
    pub(super) async fn send_connect(
        &self,
        user: &str,
        listen: SocketAddr,
    ) -> Result<Reply, DirectoryError> {
        let form = self.route.ext().profile().get().connect;
        self.send_connect_as(user, listen, form).await
    }

    async fn send_connect_as(
        &self,
        user: &str,
        listen: SocketAddr,
        form: ConnectForm,
    ) -> Result<Reply, DirectoryError> {
        let datetime = self.config.time.now().await;
        let build = |local: SocketAddr| {
            let ip = match form {
                // No IP: the port-only form, the source address is the IP.
                ConnectForm::PortOnly => None,
                _ if listen.ip().is_unspecified() => Some(local.ip()),
                _ => Some(listen.ip()),
            };
            request(
                user,
                Operation::Connect(ConnectAddr {
                    ip: Ok(ip),
                    port: Ok(listen.port()),
                }),
            )
        };
        self.route
            .call_with(self.is_own(user), &build, &datetime)
            .await
    }

    /// After a successful CONNECT of `user` at `listen`: makes sure the
    /// directory lists the listener's port, reconnecting in the port-only
    /// form when it does not. Returns a warning for stderr when the entry
    /// stays wrong. Costs nothing once the server's form is known.
    pub(super) async fn settle_connect_form(
        &self,
        user: &str,
        listen: SocketAddr,
    ) -> Option<String> {
        let profile = self.route.ext().profile();
        if profile.get().connect != ConnectForm::Unknown {
            return None;
        }
        let datetime = self.config.time.now().await;
        if self.route.ext().ensure_known(user, &datetime).await == Extensions::Peerdex {
            // Ours reads both forms (and the full one first).
            profile.set_connect(ConnectForm::Full);
            return None;
        }
        match self.listed_port(user).await {
            Ok(Some(port)) if port == listen.port() => {
                profile.set_connect(ConnectForm::Full);
                return None;
            }
            Ok(listed) => {
                tracing::debug!(
                    "{user} is listed at port {listed:?}, not {}: trying the port-only CONNECT",
                    listen.port()
                )
            }
            Err(reason) => {
                tracing::debug!("cannot check {user}'s entry: {reason}");
                return None;
            }
        }
        let reconnected = match self.call(user, Operation::Disconnect).await {
            Ok(reply) if reply.outcome() == Outcome::Ok => {
                self.send_connect_as(user, listen, ConnectForm::PortOnly)
                    .await
            }
            Ok(reply) => {
                return Some(format!(
                    "{user} is listed at a wrong port and DISCONNECT answered {:?}",
                    reply.outcome()
                ))
            }
            Err(err) => return Some(format!("{user} is listed at a wrong port: {err}")),
        };
        match reconnected {
            Ok(reply) if reply.outcome() == Outcome::Ok => {}
            Ok(reply) => {
                return Some(format!(
                    "reconnecting {user} in the port-only form answered {:?}; peers cannot reach this shell",
                    reply.outcome()
                ))
            }
            Err(err) => {
                return Some(format!(
                    "reconnecting {user} in the port-only form failed: {err}; peers cannot reach this shell"
                ))
            }
        }
        match self.listed_port(user).await {
            Ok(Some(port)) if port == listen.port() => {
                profile.set_connect(ConnectForm::PortOnly);
                None
            }
            Ok(listed) => Some(format!(
                "the directory lists {user} at port {listed:?} instead of {}: peers cannot reach this shell",
                listen.port()
            )),
            Err(reason) => Some(format!("cannot check {user}'s entry: {reason}")),
        }
    }

    /// The port the directory lists `user` at (`None`: not listed).
    async fn listed_port(&self, user: &str) -> Result<Option<u16>, String> {
        match self.call(user, Operation::ListUsers).await {
            Ok(Reply::Users(users)) => Ok(users
                .iter()
                .find(|u| u.name == user)
                .and_then(|u| u.port.trim().parse().ok())),
            Ok(reply) => Err(format!("LIST_USERS answered {:?}", reply.outcome())),
            Err(err) => Err(err.to_string()),
        }
    }
}
