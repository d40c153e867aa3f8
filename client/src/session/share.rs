//! `SHARE <dir> [description]`: publishes every eligible file under a
//! directory of the share dir, as one PUBLISH each.
//!
//! The walk (which files are eligible, and why the others are skipped) is
//! [`crate::shell::share_walk`]; this is the publishing: each file hashed and
//! published like [`PUBLISH`](super::publish) does, files already published
//! through this shell skipped without a request, and the first directory
//! failure ending the command with what was done so far.

use peerdex_protocol::{OpKind, Outcome};

use super::{Printed, Session};
use crate::content::Identity;
use crate::shell::output;

impl Session {
    /// `SHARE <dir> [description]`: publishes every eligible file under a
    /// directory of the share dir (see [`crate::shell::share_walk`]).
    pub(super) async fn share(&mut self, dir: &str, description: Option<String>) -> Printed {
        let fail = |reason: String| Printed::fail(output::share_fail_line()).with_reason(reason);
        let Some(connection) = &self.connected else {
            return fail("not connected through this shell; CONNECT first".into());
        };
        let user = connection.user.clone();
        let share = self.config.share.clone();
        let owned = dir.to_string();
        let walked =
            tokio::task::spawn_blocking(move || crate::shell::share_walk::walk(&share, &owned))
                .await
                .map_err(|err| err.to_string())
                .and_then(|walked| walked.map_err(|err| err.to_string()));
        let walk = match walked {
            Ok(walk) => walk,
            Err(reason) => return fail(format!("cannot share {dir}: {reason}")),
        };
        let mut printed = Printed::default();
        let mut skipped = walk.skipped.len();
        for (name, why) in &walk.skipped {
            printed
                .err
                .push(format!("peerdex: SHARE skips {name}: {why}"));
        }
        let mut published = 0;
        for name in walk.files {
            if self
                .connected
                .as_ref()
                .is_some_and(|c| c.published_here.contains(&name))
            {
                skipped += 1;
                continue;
            }
            let identity = match self.hash(&name).await {
                Ok(manifest) => Some(Identity {
                    size: manifest.size,
                    root: manifest.root,
                }),
                Err(err) => {
                    printed
                        .err
                        .push(format!("peerdex: warning: cannot hash {name}: {err}"));
                    None
                }
            };
            let description = description.clone().unwrap_or_else(|| name.clone());
            match self
                .send_publish(&user, &name, &description, identity)
                .await
            {
                Ok(reply) => match reply.outcome() {
                    outcome @ (Outcome::Ok | Outcome::ContentAlreadyPublished) => {
                        if let Some(warning) = self.note_publication(&user, &name, true) {
                            printed.err.push(format!("peerdex: {warning}"));
                        }
                        if outcome == Outcome::Ok {
                            published += 1;
                        } else {
                            skipped += 1;
                        }
                    }
                    outcome => {
                        skipped += 1;
                        printed.err.push(format!(
                            "peerdex: SHARE skips {name}: {}",
                            output::result_line(OpKind::Publish, outcome)
                                .trim_start_matches(output::PROMPT)
                        ));
                    }
                },
                Err(err) => {
                    let mut failed = fail(format!(
                        "the directory failed after {published} published: {err}"
                    ));
                    failed.err.splice(0..0, printed.err);
                    return failed;
                }
            }
        }
        printed.out.push(output::share_ok_line(published, skipped));
        printed
    }
}
